//! Who may read which patient's records — the one place every path asks: top-level fields,
//! nested fields, links, filters and cursors alike.
//!
//! - `patient`: their own compartment (the token's `patient_id`);
//! - `practitioner`: the patients in their care (the care team of the patient read model: an
//!   appointment or encounter with them, an observation or prescription they authored), every
//!   patient when they break the glass (`ETREAT` with a reason, which the audit keeps);
//! - `admin`: every patient;
//! - `auditor`: no clinical record (only `phiAccessLog`).
//!
//! A refusal is `FORBIDDEN` and is noted in the request's audit trail as a denied access.

use async_graphql::ErrorExtensions;
use events::Role;
use events::audit::{AccessAction, AccessOutcome};
use platform::auth::Caller;
use uuid::Uuid;

use crate::graphql::RequestData;
use crate::loaders::InCare;

/// Whose clinical records the caller may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Patient(Uuid),
    /// The patients in this practitioner's care.
    Practitioner(String),
}

pub const NOT_OWN: &str = "patients may read only their own records";
pub const NOT_IN_CARE: &str = "the patient is not in this practitioner's care: break the glass \
     (X-Purpose-Of-Use: ETREAT with an X-Break-Glass-Reason) to read their records";

/// The scope of a caller acting in `role` (the one role the request acts in and is audited
/// as: a token with several roles gets no wider scope than that one), or why they read no
/// clinical record; `break_glass`: the practitioner gave a break-the-glass reason.
pub fn scope(caller: &Caller, role: Role, break_glass: bool) -> Result<Scope, &'static str> {
    match role {
        Role::Admin => Ok(Scope::All),
        Role::Practitioner if break_glass => Ok(Scope::All),
        Role::Practitioner => Ok(Scope::Practitioner(caller.claims.sub.clone())),
        Role::Patient => match caller.claims.patient_id {
            Some(own) => Ok(Scope::Patient(own)),
            None => Err("a patient token without patient_id reads no record"),
        },
        Role::Auditor => Err("this role may not read patient records"),
    }
}

fn forbidden(reason: &'static str) -> async_graphql::Error {
    async_graphql::Error::new(reason).extend_with(|_, e| e.set("code", "FORBIDDEN"))
}

/// Why the caller may not read `patient`'s records, if they may not.
pub async fn denial(
    request: &RequestData,
    patient: Uuid,
) -> async_graphql::Result<Option<&'static str>> {
    Ok(match &request.scope {
        Err(reason) => Some(reason),
        Ok(Scope::All) => None,
        Ok(Scope::Patient(own)) => (*own != patient).then_some(NOT_OWN),
        Ok(Scope::Practitioner(_)) => {
            let in_care = request
                .loader
                .load_one(InCare(patient))
                .await
                .map_err(|e| crate::graphql::unavailable(&e))?;
            (!in_care.unwrap_or(false)).then_some(NOT_IN_CARE)
        }
    })
}

/// `Ok` if the caller may read `patient`'s records; else `FORBIDDEN`, noted as a denied
/// `action` on `resource_type` (`ids`: what was asked for).
pub async fn authorize(
    request: &RequestData,
    patient: Uuid,
    action: AccessAction,
    resource_type: &str,
    ids: &[Uuid],
) -> async_graphql::Result<()> {
    match denial(request, patient).await? {
        None => Ok(()),
        Some(reason) => Err(refuse(request, patient, action, resource_type, ids, reason)),
    }
}

/// The `FORBIDDEN` answer to an access outside the caller's scope, noted as denied (against
/// the nil patient id when no patient was named).
pub fn refuse(
    request: &RequestData,
    patient: Uuid,
    action: AccessAction,
    resource_type: &str,
    ids: &[Uuid],
    reason: &'static str,
) -> async_graphql::Error {
    request.audit.note(
        patient,
        action,
        resource_type,
        ids.iter().map(Uuid::to_string),
        AccessOutcome::Denied,
        Some(reason),
    );
    forbidden(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::auth::Claims;

    fn caller(roles: &[Role], patient_id: Option<Uuid>) -> Caller {
        Caller {
            claims: Claims {
                sub: "someone".into(),
                roles: roles.to_vec(),
                patient_id,
                exp: 0,
                iat: None,
            },
        }
    }

    #[test]
    fn each_role_reads_its_own_scope() {
        let own = Uuid::now_v7();
        let c = caller(&[Role::Admin], None);
        assert_eq!(scope(&c, Role::Admin, false), Ok(Scope::All));
        let c = caller(&[Role::Practitioner], None);
        assert_eq!(
            scope(&c, Role::Practitioner, false),
            Ok(Scope::Practitioner("someone".into()))
        );
        assert_eq!(scope(&c, Role::Practitioner, true), Ok(Scope::All));
        let c = caller(&[Role::Patient], Some(own));
        assert_eq!(scope(&c, Role::Patient, false), Ok(Scope::Patient(own)));
        // Breaking the glass is a practitioner's: a patient's scope stays their own.
        assert_eq!(scope(&c, Role::Patient, true), Ok(Scope::Patient(own)));
        assert!(scope(&caller(&[Role::Patient], None), Role::Patient, false).is_err());
        assert!(scope(&caller(&[Role::Auditor], None), Role::Auditor, false).is_err());
    }

    #[test]
    fn a_token_with_several_roles_reads_as_the_role_it_acts_in() {
        // Acting (and audited) as a practitioner, an admin role on the same token does not
        // widen the scope past the patients in their care.
        let c = caller(&[Role::Practitioner, Role::Admin], None);
        assert_eq!(
            scope(&c, Role::Practitioner, false),
            Ok(Scope::Practitioner("someone".into()))
        );
    }
}
