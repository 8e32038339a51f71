//! `[services.NAME.rollout]`: a strategy's keys, and what it needs of the service.

use crate::keys::rollout::{RolloutTable, StepTable};
use crate::model::{Amount, Pause, Rollout, RolloutStrategy, Step, default_steps};
use crate::problem::Problems;
use crate::schema::Field;

/// Builds the rollout of a service; `exposed`: the service has `expose` (a canary or a
/// blue-green splits traffic in bulwark's proxy, so it needs one).
pub(super) fn rollout(
    raw: &Field<RolloutTable>,
    exposed: bool,
    tcp: bool,
    p: &mut Problems,
) -> Rollout {
    let Some(r) = raw.value() else {
        return Rollout::default();
    };
    let d = Rollout::default();
    let strategy = r.strategy.get().unwrap_or(RolloutStrategy::Rolling);
    let max_surge = r.max_surge.get().unwrap_or(d.max_surge);
    let max_unavailable = r.max_unavailable.get().unwrap_or(d.max_unavailable);
    if max_surge == Amount::Count(0) && max_unavailable == Amount::Count(0) {
        p.push(
            r.max_surge
                .span()
                .or(r.max_unavailable.span())
                .unwrap_or(r.span.clone()),
            format!(
                "{}: max_surge and max_unavailable are both 0, so a rolling update could \
                 neither start a new replica nor stop an old one; allow one of them",
                r.label
            ),
        );
    }
    if strategy != RolloutStrategy::Rolling && tcp {
        p.push(
            r.strategy.span().unwrap_or(r.span.clone()),
            format!(
                "{}: strategy = \"{}\" splits HTTP requests; a TCP service (protocol = \"tcp\") \
                 can only use strategy = \"rolling\"",
                r.label,
                strategy.as_str()
            ),
        );
    }
    if strategy != RolloutStrategy::Rolling && !exposed {
        p.push(
            r.strategy.span().unwrap_or(r.span.clone()),
            format!(
                "{}: strategy = \"{}\" shifts traffic in bulwark's proxy, but the service \
                 has no `expose`; add [{}] or use strategy = \"rolling\"",
                r.label,
                strategy.as_str(),
                r.label
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .replace(".rollout", ".expose"),
            ),
        );
    }
    let only = |field: &str,
                span: Option<crate::problem::Span>,
                wanted: RolloutStrategy,
                p: &mut Problems| {
        if let Some(span) = span
            && strategy != wanted
        {
            p.push(
                span,
                format!(
                    "{}: `{field}` applies to strategy = \"{}\" only; remove it or change the strategy",
                    r.label,
                    wanted.as_str()
                ),
            );
        }
    };
    only("steps", r.steps.span(), RolloutStrategy::Canary, p);
    only(
        "preview_listen",
        r.preview_listen.span(),
        RolloutStrategy::BlueGreen,
        p,
    );
    only(
        "promote_after",
        r.promote_after.span(),
        RolloutStrategy::BlueGreen,
        p,
    );
    let steps = match &r.steps {
        Field::Given(list) => list.get_ref().iter().filter_map(step).collect(),
        _ => default_steps(),
    };
    Rollout {
        strategy,
        max_surge,
        max_unavailable,
        min_ready: r.min_ready.get().unwrap_or(d.min_ready),
        progress_deadline: r.progress_deadline.get().unwrap_or(d.progress_deadline),
        steps,
        sticky: r.sticky.get(),
        preview_listen: r.preview_listen.get(),
        promote_after: r.promote_after.get(),
        scale_down_delay: r.scale_down_delay.get().unwrap_or(d.scale_down_delay),
        analysis: r
            .analysis
            .value()
            .and_then(|a| a.build())
            .unwrap_or_default(),
    }
}

fn step(raw: &StepTable) -> Option<Step> {
    Some(Step {
        weight: raw.weight.get()?,
        pause: raw
            .pause
            .get()
            .unwrap_or(Pause::For(std::time::Duration::from_secs(60))),
        replicas: raw.replicas.get(),
    })
}
