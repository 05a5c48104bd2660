//! Who may do what: the platform's access rules in one place, for both APIs (the command API
//! asks who may write an aggregate; the query API who may read a patient's compartment).

use events::Role;
use events::registry::Aggregate;
use uuid::Uuid;

use crate::auth::Caller;

/// The roles that may write commands to `aggregate`.
pub const fn writers(aggregate: Aggregate) -> &'static [Role] {
    match aggregate {
        // Front desks register patients; patients register and update themselves.
        Aggregate::Patient => &[Role::Admin, Role::Patient],
        Aggregate::Appointment => &[Role::Practitioner, Role::Admin],
        Aggregate::Encounter | Aggregate::Observation | Aggregate::MedicationRequest => {
            &[Role::Practitioner]
        }
    }
}

/// Whose patient data a caller may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compartment {
    /// Every patient's (practitioners and admins).
    All,
    /// Only this patient's (a patient, their own).
    Only(Uuid),
}

/// The patient data `caller` may read, or why none.
pub fn compartment(caller: &Caller) -> Result<Compartment, &'static str> {
    if caller.has(Role::Practitioner) || caller.has(Role::Admin) {
        Ok(Compartment::All)
    } else if let (true, Some(own)) = (caller.has(Role::Patient), caller.claims.patient_id) {
        Ok(Compartment::Only(own))
    } else if caller.has(Role::Patient) {
        Err("a patient token without patient_id reads no record")
    } else {
        Err("this role may not read patient records")
    }
}

/// Why `caller` may not read `patient`'s data, if they may not.
pub fn read_denial(caller: &Caller, patient: Uuid) -> Option<&'static str> {
    match compartment(caller) {
        Ok(Compartment::All) => None,
        Ok(Compartment::Only(own)) if own == patient => None,
        Ok(Compartment::Only(_)) => Some("patients may read only their own record"),
        Err(reason) => Some(reason),
    }
}

/// Why `caller` may not update `patient`'s record, if they may not (a patient may update
/// only their own; the role itself is checked with [`writers`]).
pub fn patient_update_denial(caller: &Caller, patient: Uuid) -> Option<&'static str> {
    (caller.acting_role(writers(Aggregate::Patient)) == Some(Role::Patient)
        && caller.claims.patient_id != Some(patient))
    .then_some("patients may update only their own record")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Claims;

    fn caller(role: Role, patient_id: Option<Uuid>) -> Caller {
        Caller {
            claims: Claims {
                sub: "u".into(),
                roles: vec![role],
                patient_id,
                exp: 0,
                iat: None,
            },
        }
    }

    #[test]
    fn patients_read_and_update_only_their_own_record() {
        let (ada, other) = (Uuid::now_v7(), Uuid::now_v7());
        let patient = caller(Role::Patient, Some(ada));
        assert_eq!(read_denial(&patient, ada), None);
        assert!(read_denial(&patient, other).is_some());
        assert_eq!(patient_update_denial(&patient, ada), None);
        assert!(patient_update_denial(&patient, other).is_some());
        for role in [Role::Practitioner, Role::Admin] {
            assert_eq!(read_denial(&caller(role, None), other), None);
        }
        assert!(read_denial(&caller(Role::Auditor, None), ada).is_some());
        assert!(read_denial(&caller(Role::Patient, None), ada).is_some());
        assert_eq!(patient_update_denial(&caller(Role::Admin, None), ada), None);
    }

    #[test]
    fn clinical_records_are_written_by_practitioners_only() {
        for aggregate in [
            Aggregate::Encounter,
            Aggregate::Observation,
            Aggregate::MedicationRequest,
        ] {
            assert_eq!(writers(aggregate), &[Role::Practitioner]);
        }
        assert!(!writers(Aggregate::Patient).contains(&Role::Practitioner));
    }
}
