//! Experiments that start by themselves: on cron times, or as a monkey.

use std::time::Duration;

use bus::EventKind;
use spec::{ChaosSchedule, Experiment, Monkey};
use tokio::task::JoinHandle;

use crate::{Chaos, Trigger};

impl Chaos {
    /// One task per scheduled experiment; abort them to stop.
    pub fn spawn_schedules(&self) -> Vec<JoinHandle<()>> {
        self.inner
            .experiments
            .iter()
            .filter(|e| e.schedule != ChaosSchedule::OnDemand)
            .map(|e| {
                let (chaos, exp) = (self.clone(), e.clone());
                tokio::spawn(async move { chaos.scheduled(exp).await })
            })
            .collect()
    }

    async fn scheduled(self, exp: Experiment) {
        let mut last = jiff::Zoned::now();
        loop {
            let Some((at, trigger)) = next(&exp, &last) else {
                tracing::warn!(experiment = %exp.name, "its schedule never fires again");
                return;
            };
            let wait = at.timestamp().duration_since(jiff::Timestamp::now());
            tokio::time::sleep(wait.try_into().unwrap_or(Duration::ZERO)).await;
            last = at.clone();
            if let ChaosSchedule::Monkey(Monkey { leashed: true, .. }) = exp.schedule {
                self.inner.bus.publish(EventKind::ExperimentLeashed {
                    service: exp.target.service.clone(),
                    name: exp.name.clone(),
                    fault: format!(
                        "{} on {} replica(s)",
                        exp.fault.kind().as_str(),
                        pick_words(exp.target.pick)
                    ),
                });
                continue;
            }
            match self.start(exp.clone(), trigger).await {
                Ok((_, task)) => {
                    // The next time counts from the end of this run (the monkey's gap).
                    let _ = task.await;
                    last = jiff::Zoned::now();
                }
                Err(e) => tracing::info!(experiment = %exp.name, "{e}"),
            }
        }
    }
}

fn pick_words(pick: spec::Pick) -> String {
    match pick {
        spec::Pick::One => "1".into(),
        spec::Pick::All => "all".into(),
        spec::Pick::Fixed(n) => n.to_string(),
        spec::Pick::Percent(p) => format!("{p} %"),
    }
}

/// The next start after `last`.
fn next(exp: &Experiment, last: &jiff::Zoned) -> Option<(jiff::Zoned, Trigger)> {
    match &exp.schedule {
        ChaosSchedule::OnDemand => None,
        ChaosSchedule::Cron(c) => c.next_after(last).map(|t| (t, Trigger::Cron)),
        ChaosSchedule::Monkey(m) => {
            let gap =
                policy::chaos::exponential(m.mean_interval, rand::random::<f64>()).max(m.min_gap);
            let window = policy::chaos::Window {
                days: m.days.clone(),
                minutes: m.hours,
            };
            let at = policy::chaos::monkey_next(last.datetime(), gap, &window)?;
            at.to_zoned(last.time_zone().clone())
                .ok()
                .map(|t| (t, Trigger::Monkey))
        }
    }
}
