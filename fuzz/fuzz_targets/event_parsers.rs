//! Arbitrary bytes → serde_json → every parser of function inputs: `SessionRef::from_event`
//! (backup and restore functions), `Tick::from_event` (scheduler), the bridge's `Change`
//! (bare and as an EventBridge `detail`), and what a tick's time drives in the scheduler
//! (due slots, session names, status timestamps). Nothing may panic; a refused event is
//! `BadEvent`, never retried, answered `rejected`; what is accepted is a valid name and
//! round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use stashless::Error;
use stashless::dispatch::Change;
use stashless::events::{SessionRef, Tick, validate_name};
use stashless::schedule::{Schedule, session_name};

const KINDS: [&str; 2] = ["BackupSession", "RestoreSession"];
const SCHEDULES: [&str; 3] = [
    "*/5 * * * *",
    "CRON_TZ=Europe/Berlin 30 2 * * *",
    "TZ=America/St_Johns 0 0 1 * 1",
];

fn refused(e: Error) {
    assert!(matches!(e, Error::BadEvent(_)), "{e:?}");
    assert!(!e.is_retryable(), "{e}");
    let answer = stashless::lambda::respond(Err(e)).expect("permanent: answered, not retried");
    assert_eq!(answer["status"], "rejected");
}

fn session(payload: &Value) {
    for kind in KINDS {
        match SessionRef::from_event(payload, kind) {
            Ok(r) => {
                assert!(r.kind.as_deref().is_none_or(|k| k == kind), "{r:?}");
                validate_name("namespace", &r.namespace, 63).expect("accepted namespace");
                validate_name("name", &r.name, 253).expect("accepted name");
                let raw = serde_json::to_value(&r).unwrap();
                assert_eq!(SessionRef::from_event(&raw, kind).unwrap(), r);
                // The same session as the bridge would put it on the bus.
                let change = Change::from_ref(
                    &SessionRef {
                        kind: Some(kind.to_string()),
                        ..r.clone()
                    },
                    "Added",
                );
                let event = json!({
                    "version": "0", "id": "x", "detail-type": change.detail_type(),
                    "source": stashless::dispatch::SOURCE, "account": "1",
                    "time": "2026-01-01T00:00:00Z", "region": "eu-west-1", "resources": [],
                    "detail": change,
                });
                let back = SessionRef::from_event(&event, kind).unwrap();
                assert_eq!((back.namespace, back.name), (r.namespace, r.name));
            }
            Err(e) => refused(e),
        }
    }
}

fn tick(payload: &Value) {
    let t = match Tick::from_event(payload) {
        Ok(t) => t,
        Err(e) => return refused(e),
    };
    let Some(now) = t.time else { return };
    let _ = stashless::api::timestamp(now);
    for source in SCHEDULES {
        let schedule: Schedule = source.parse().unwrap();
        let created = Some(now - chrono::Duration::days(1));
        if let Some(slot) = schedule.due_slot(now, chrono::Duration::minutes(5), created) {
            assert!(slot <= now && now - slot <= chrono::Duration::minutes(5));
            let name = session_name("nightly", slot);
            validate_name("name", &name, 63).expect("session names are valid");
        }
        let _ = schedule.next_slot(now);
    }
}

fn change(payload: &Value) {
    let Ok(c) = serde_json::from_value::<Change>(payload.clone()) else {
        return;
    };
    let _ = c.detail_type();
    assert_eq!(
        serde_json::from_value::<Change>(serde_json::to_value(&c).unwrap()).unwrap(),
        c
    );
    let r = c.session_ref();
    assert_eq!(Change::from_ref(&r, &c.change).session_ref(), r);
}

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    session(&payload);
    tick(&payload);
    change(&payload);
    if let Some(detail) = payload.get("detail") {
        change(detail);
    }
});
