//! Conversions between floret-core's run vocabulary (`RunInfo`, `StartRun`, `RunEvent`) and
//! the `floret.v1` wire types. As in `convert`: to the wire is total, from the wire returns a
//! [`DecodeError`] naming the field.

use crate::convert::{
    metric_record_from_proto, metric_record_to_proto, user_config_from_proto,
    user_config_value_to_proto,
};
use crate::error::{DecodeError, Loc};
use crate::proto::{self, v1};
use floret_core::{
    AppRef, PhaseSummary, RoundSummary, RunEvent, RunInfo, RunStatus, StartRun, SubStatus,
    UserConfig,
};

fn app_to_proto(a: &AppRef) -> v1::AppRef {
    v1::AppRef {
        name: a.name.clone(),
        serverapp: a.serverapp.clone(),
        clientapp: a.clientapp.clone(),
        fab_hash: a.fab_hash.clone(),
    }
}

fn app_from_proto(a: v1::AppRef) -> AppRef {
    AppRef {
        name: a.name,
        serverapp: a.serverapp,
        clientapp: a.clientapp,
        fab_hash: a.fab_hash,
    }
}

fn config_to_proto(c: &UserConfig) -> Vec<v1::ConfigEntry> {
    c.iter()
        .map(|(key, value)| v1::ConfigEntry {
            key: key.clone(),
            value: Some(user_config_value_to_proto(value)),
        })
        .collect()
}

fn config_from_proto(
    entries: Vec<v1::ConfigEntry>,
    loc: &Loc<'_>,
) -> Result<UserConfig, DecodeError> {
    user_config_from_proto(entries.into_iter().map(|e| (e.key, e.value)), loc)
}

fn status_to_proto(status: RunStatus, reason: &str) -> proto::RunStatus {
    let (status, sub_status) = match status {
        RunStatus::Pending => ("pending", ""),
        RunStatus::Starting => ("starting", ""),
        RunStatus::Running => ("running", ""),
        RunStatus::Finished(SubStatus::Completed) => ("finished", "completed"),
        RunStatus::Finished(SubStatus::Failed) => ("finished", "failed"),
        RunStatus::Finished(SubStatus::Stopped) => ("finished", "stopped"),
    };
    proto::RunStatus {
        status: status.to_string(),
        sub_status: sub_status.to_string(),
        details: reason.to_string(),
    }
}

fn status_from_proto(s: &proto::RunStatus, loc: &Loc<'_>) -> Result<RunStatus, DecodeError> {
    Ok(match (s.status.as_str(), s.sub_status.as_str()) {
        ("pending", _) => RunStatus::Pending,
        ("starting", _) => RunStatus::Starting,
        ("running", _) => RunStatus::Running,
        ("finished", "completed") => RunStatus::Finished(SubStatus::Completed),
        ("finished", "failed") => RunStatus::Finished(SubStatus::Failed),
        ("finished", "stopped") => RunStatus::Finished(SubStatus::Stopped),
        ("finished", other) => {
            return Err(loc.field("sub_status").invalid(format!(
                "is {other:?}; expected \"completed\", \"failed\" or \"stopped\""
            )));
        }
        (other, _) => {
            return Err(loc.field("status").invalid(format!(
                "is {other:?}; expected \"pending\", \"starting\", \"running\" or \"finished\""
            )));
        }
    })
}

pub(crate) fn run_info_to_proto(r: &RunInfo) -> v1::RunInfo {
    v1::RunInfo {
        run_id: r.run_id,
        app: Some(app_to_proto(&r.app)),
        federation: r.federation.clone(),
        run_config: config_to_proto(&r.run_config),
        status: Some(status_to_proto(r.status, &r.reason)),
        created_at: r.created_at,
        status_changed_at: r.status_changed_at,
        owner: r.owner.clone(),
    }
}

pub(crate) fn run_info_from_proto(p: v1::RunInfo) -> Result<RunInfo, DecodeError> {
    let loc = Loc::Root("RunInfo");
    let status_loc = loc.field("status");
    let status = p.status.ok_or_else(|| status_loc.missing())?;
    Ok(RunInfo {
        run_id: p.run_id,
        app: app_from_proto(p.app.ok_or_else(|| loc.field("app").missing())?),
        federation: p.federation,
        run_config: config_from_proto(p.run_config, &loc.field("run_config"))?,
        status: status_from_proto(&status, &status_loc)?,
        reason: status.details,
        created_at: p.created_at,
        status_changed_at: p.status_changed_at,
        owner: p.owner,
    })
}

pub(crate) fn start_run_to_proto(s: &StartRun) -> v1::StartRunRequest {
    v1::StartRunRequest {
        app: Some(app_to_proto(&s.app)),
        federation: s.federation.clone(),
        run_config: config_to_proto(&s.run_config),
        federation_options: config_to_proto(&s.federation_options),
        fab: s.fab.as_ref().map(|content| proto::Fab {
            hash_str: s.app.fab_hash.clone(),
            content: content.clone(),
            verifications: Default::default(),
        }),
    }
}

/// A FAB's `hash_str`, when set, must be the app's `fab_hash`: the two name the same bundle.
/// Whether the content has that hash is for the SuperLink to check.
pub(crate) fn start_run_from_proto(p: v1::StartRunRequest) -> Result<StartRun, DecodeError> {
    let loc = Loc::Root("StartRunRequest");
    let app = app_from_proto(p.app.ok_or_else(|| loc.field("app").missing())?);
    let fab = match p.fab {
        Some(fab) if !fab.hash_str.is_empty() && fab.hash_str != app.fab_hash => {
            return Err(loc.field("fab").field("hash_str").invalid(format!(
                "is {:?}, but app.fab_hash is {:?}",
                fab.hash_str, app.fab_hash
            )));
        }
        fab => fab.map(|f| f.content),
    };
    Ok(StartRun {
        app,
        federation: p.federation,
        run_config: config_from_proto(p.run_config, &loc.field("run_config"))?,
        federation_options: config_from_proto(
            p.federation_options,
            &loc.field("federation_options"),
        )?,
        fab,
    })
}

fn phase_to_proto(p: &PhaseSummary) -> v1::PhaseSummary {
    v1::PhaseSummary {
        sampled: p.sampled,
        replies: p.replies,
        failures: p.failures,
        late: p.late,
        metrics: Some(metric_record_to_proto(&p.metrics)),
    }
}

fn phase_from_proto(p: v1::PhaseSummary, loc: &Loc<'_>) -> Result<PhaseSummary, DecodeError> {
    Ok(PhaseSummary {
        sampled: p.sampled,
        replies: p.replies,
        failures: p.failures,
        late: p.late,
        metrics: match p.metrics {
            Some(m) => metric_record_from_proto(m, &loc.field("metrics"))?,
            None => Default::default(),
        },
    })
}

pub(crate) fn run_event_to_proto(e: &RunEvent) -> v1::RunEvent {
    use v1::run_event::Event;
    let event = match e {
        RunEvent::Log(line) => Event::Log(line.clone()),
        RunEvent::RoundStarted { round, num_rounds } => Event::RoundStarted(v1::RoundStarted {
            round: *round,
            num_rounds: *num_rounds,
        }),
        RunEvent::RoundFinished(s) => Event::RoundFinished(v1::RoundSummary {
            round: s.round,
            train: s.train.as_ref().map(phase_to_proto),
            evaluate: s.evaluate.as_ref().map(phase_to_proto),
            central: s.central.as_ref().map(metric_record_to_proto),
        }),
    };
    v1::RunEvent { event: Some(event) }
}

pub(crate) fn run_event_from_proto(p: v1::RunEvent) -> Result<RunEvent, DecodeError> {
    use v1::run_event::Event;
    let loc = Loc::Root("RunEvent");
    Ok(
        match p
            .event
            .ok_or_else(|| loc.no_value("log, round_started, round_finished"))?
        {
            Event::Log(line) => RunEvent::Log(line),
            Event::RoundStarted(r) => RunEvent::RoundStarted {
                round: r.round,
                num_rounds: r.num_rounds,
            },
            Event::RoundFinished(s) => {
                let here = loc.field("round_finished");
                RunEvent::RoundFinished(RoundSummary {
                    round: s.round,
                    train: s
                        .train
                        .map(|t| phase_from_proto(t, &here.field("train")))
                        .transpose()?,
                    evaluate: s
                        .evaluate
                        .map(|t| phase_from_proto(t, &here.field("evaluate")))
                        .transpose()?,
                    central: s
                        .central
                        .map(|m| metric_record_from_proto(m, &here.field("central")))
                        .transpose()?,
                })
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{MetricRecord, UserConfigValue};

    fn info(status: RunStatus) -> RunInfo {
        let mut run_config = UserConfig::new();
        run_config.insert("num-server-rounds".into(), UserConfigValue::Int(3));
        run_config.insert("lr".into(), UserConfigValue::Float(0.1));
        RunInfo {
            run_id: 7,
            app: AppRef {
                name: "digits".into(),
                serverapp: "digits.server_app:app".into(),
                clientapp: "digits.client_app:app".into(),
                fab_hash: String::new(),
            },
            federation: "lan".into(),
            run_config,
            status,
            reason: "because".into(),
            created_at: 1.5,
            status_changed_at: 2.5,
            owner: "alice".into(),
        }
    }

    #[test]
    fn run_info_round_trips_every_status() {
        use RunStatus::*;
        for status in [
            Pending,
            Starting,
            Running,
            Finished(SubStatus::Completed),
            Finished(SubStatus::Failed),
            Finished(SubStatus::Stopped),
        ] {
            let r = info(status);
            assert_eq!(run_info_from_proto(run_info_to_proto(&r)).unwrap(), r);
        }
    }

    #[test]
    fn unknown_status_names_the_field() {
        let mut p = run_info_to_proto(&info(RunStatus::Running));
        p.status = Some(proto::RunStatus {
            status: "sleeping".into(),
            ..Default::default()
        });
        let err = run_info_from_proto(p).unwrap_err().to_string();
        assert!(
            err.starts_with("RunInfo.status.status: is \"sleeping\""),
            "{err}"
        );
    }

    #[test]
    fn round_summary_round_trips() {
        let mut metrics = MetricRecord::new();
        metrics.insert("loss", 0.25);
        metrics.insert("num-examples", 10i64);
        let event = RunEvent::RoundFinished(RoundSummary {
            round: 2,
            train: Some(PhaseSummary {
                sampled: 3,
                replies: 2,
                failures: 1,
                late: 0,
                metrics: metrics.clone(),
            }),
            evaluate: None,
            central: Some(metrics),
        });
        assert_eq!(
            run_event_from_proto(run_event_to_proto(&event)).unwrap(),
            event
        );
    }

    #[test]
    fn empty_event_is_refused() {
        let err = run_event_from_proto(v1::RunEvent { event: None }).unwrap_err();
        assert!(
            err.to_string().starts_with("RunEvent has no value"),
            "{err}"
        );
    }
}
