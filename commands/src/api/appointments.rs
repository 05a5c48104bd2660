//! `POST /v1/appointments` (ScheduleAppointment) and `POST /v1/appointments/{id}/cancel`
//! (CancelAppointment).

use chrono::Utc;
use events::Role;
use events::registry::Aggregate;
use platform::access;
use platform::problem::Problem;
use uuid::Uuid;

use super::{AppState, CommandRoute, Prepared, Received, require_patient, valid};
use crate::domain::appointment::{self, Appointment, AppointmentCommand, CancelBody, ScheduleBody};

pub(super) struct Schedule;

impl CommandRoute for Schedule {
    type Body = ScheduleBody;
    type Target = Appointment;
    const ALLOWED: &'static [Role] = access::writers(Aggregate::Appointment);
    const COLLECTION: &'static str = "appointments";

    async fn prepare(
        app: &AppState,
        received: &Received<ScheduleBody>,
        _id: Option<Uuid>,
    ) -> Result<Prepared<Appointment>, Problem> {
        let new = valid(appointment::parse_schedule(&received.body, Utc::now()))?;
        // An appointment puts its practitioner on the patient's care team (whose records they
        // then read): a practitioner books only themselves; the front desk books anyone.
        if received.meta.role == Role::Practitioner
            && new.practitioner_id != received.meta.caller.claims.sub
        {
            return Err(Problem::forbidden(
                "a practitioner books appointments with themselves; the front desk (admin) books them for others",
            ));
        }
        require_patient(app, new.patient_id).await?;
        Ok(Prepared::fresh(AppointmentCommand::Schedule(new)))
    }
}

pub(super) struct Cancel;

impl CommandRoute for Cancel {
    type Body = CancelBody;
    type Target = Appointment;
    const ALLOWED: &'static [Role] = access::writers(Aggregate::Appointment);
    const COLLECTION: &'static str = "appointments";
    const ACTION: &'static str = "cancel";

    async fn prepare(
        _app: &AppState,
        received: &Received<CancelBody>,
        id: Option<Uuid>,
    ) -> Result<Prepared<Appointment>, Problem> {
        let reason = valid(appointment::parse_cancel(&received.body))?;
        let id = id.expect("an update has the aggregate's id");
        Ok(Prepared::new(id, AppointmentCommand::Cancel { reason }))
    }
}
