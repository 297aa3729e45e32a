//! A model's quality from its real run: losses, perplexity, convergence and overfitting signals,
//! and a 1–5 star rating explained in words. Pure: computed from the run's curve and the
//! worker's final metrics, unit-tested on worked curves.
//!
//! The original's rule: loss reduction > 50% → 5 stars, > 30% → 4, > 15% → 3, > 5% → 2, else 1;
//! an eval − train gap above 0.5 → overfit, `max(2, stars − 1)`. Kept as the base, with these
//! corrections:
//! - the reduction compares the mean of the first and last windows of the curve, not two single
//!   steps: one step's loss is noise (a short first batch, an outlier) and swung the rating;
//! - an overfit model loses a star but never gains one: `max(2, stars − 1)` turned an overfit
//!   1-star model into 2 stars; it is `max(1, stars − 1)` here;
//! - overfitting is also an eval loss that rose from its best by more than 5% — the direct
//!   signal — since an absolute 0.5 gap means little at a loss of 4 and a lot at 0.3;
//! - a loss that rose over the run is 1 star whatever else holds;
//! - without a held-out set nothing can tell learning from memorising: at most 4 stars.

use serde::{Deserialize, Serialize};

use crate::jobs::MetricPoint;

/// How the end of the training curve moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Convergence {
    /// Still falling by more than 2% of the loss over the last fifth of the run: more training
    /// would likely help.
    StillFalling,
    /// Flat within ±2%: trained to a plateau.
    Converged,
    /// Rising by more than 2%: the learning rate may be too high.
    Rising,
    /// Too few points to tell.
    Unknown,
}

/// What the model page and the API show as `quality_metrics` (`overall_score` keeps the
/// original's name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct Quality {
    /// 1–5 stars.
    pub overall_score: u8,
    /// The rating in words, e.g. "4 stars: loss fell 38%; eval loss still falling; no overfit".
    pub explanation: String,
    pub initial_train_loss: f64,
    pub final_train_loss: f64,
    pub final_eval_loss: Option<f64>,
    /// exp(final eval loss).
    pub perplexity: Option<f64>,
    /// (initial − final) / initial, of the smoothed train loss.
    pub loss_reduction: f64,
    pub convergence: Convergence,
    /// Change of the train loss over the last fifth of the steps, relative to the final loss
    /// (−0.05: fell 5%).
    pub convergence_slope: Option<f64>,
    /// Final eval − final train loss.
    pub eval_gap: Option<f64>,
    /// The eval loss rose more than 5% from its best.
    pub eval_rising: bool,
    pub overfit: bool,
    pub steps: i32,
}

/// The window a start or end loss is averaged over: a tenth of the points, at least one, at
/// most 20.
fn window(n: usize) -> usize {
    (n / 10).clamp(1, 20)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Least-squares slope of `(x, y)`.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    Some(points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx)
}

/// Rates a run from its curve (in step order); `final_eval_loss` is the worker's last
/// evaluation. `None` when the curve has no training loss at all.
pub fn rate(curve: &[MetricPoint], final_eval_loss: Option<f64>) -> Option<Quality> {
    let train: Vec<(f64, f64)> = curve
        .iter()
        .filter_map(|p| p.train_loss.map(|l| (f64::from(p.step), l)))
        .filter(|(_, l)| l.is_finite())
        .collect();
    if train.is_empty() {
        return None;
    }
    let w = window(train.len());
    let losses: Vec<f64> = train.iter().map(|p| p.1).collect();
    let initial = mean(&losses[..w]);
    let last = mean(&losses[losses.len() - w..]);
    let reduction = if initial > 0.0 {
        (initial - last) / initial
    } else {
        0.0
    };

    // The last fifth of the run: its slope over its own span, relative to the final loss.
    let tail_len = (train.len() / 5).max(3).min(train.len());
    let tail = &train[train.len() - tail_len..];
    let span = tail.last().map_or(0.0, |p| p.0) - tail.first().map_or(0.0, |p| p.0);
    let relative_slope = slope(tail)
        .filter(|_| last > 0.0 && span > 0.0)
        .map(|s| s * span / last);
    let convergence = match relative_slope {
        None => Convergence::Unknown,
        Some(s) if s < -0.02 => Convergence::StillFalling,
        Some(s) if s > 0.02 => Convergence::Rising,
        Some(_) => Convergence::Converged,
    };

    let evals: Vec<f64> = curve
        .iter()
        .filter_map(|p| p.eval_loss)
        .filter(|l| l.is_finite())
        .collect();
    let final_eval = final_eval_loss.or(evals.last().copied());
    let best_eval = evals.iter().copied().fold(f64::INFINITY, f64::min);
    let eval_rising = match final_eval {
        Some(e) if best_eval.is_finite() && best_eval > 0.0 => e > best_eval * 1.05,
        _ => false,
    };
    let eval_gap = final_eval.map(|e| e - last);
    let overfit = eval_gap.is_some_and(|g| g > 0.5) || eval_rising;

    let mut stars: u8 = match reduction {
        r if r > 0.50 => 5,
        r if r > 0.30 => 4,
        r if r > 0.15 => 3,
        r if r > 0.05 => 2,
        _ => 1,
    };
    let mut reasons = vec![if reduction >= 0.0 {
        format!("loss fell {:.0}%", reduction * 100.0)
    } else {
        format!("loss rose {:.0}%", -reduction * 100.0)
    }];
    if overfit {
        stars = stars.saturating_sub(1).max(1);
    }
    if last > initial {
        stars = 1;
    }
    match convergence {
        Convergence::StillFalling => reasons.push(
            if final_eval.is_some() && !eval_rising {
                "eval loss still falling: more epochs would likely help"
            } else {
                "still falling at the end: more epochs would likely help"
            }
            .into(),
        ),
        Convergence::Converged => reasons.push("converged".into()),
        Convergence::Rising => reasons.push("rising at the end: try a lower learning rate".into()),
        Convergence::Unknown => {}
    }
    match (final_eval, overfit) {
        (None, _) => {
            if stars > 4 {
                stars = 4;
            }
            reasons
                .push("no held-out set, so overfitting was not checked (at most 4 stars)".into());
        }
        (Some(_), true) => reasons.push(format!(
            "overfitting: eval loss {}{} (one star off)",
            eval_gap.map_or(String::new(), |g| format!("{g:.2} above train")),
            if eval_rising {
                format!(
                    "{}rose {:.0}% from its best",
                    if eval_gap.is_some_and(|g| g > 0.5) {
                        ", and "
                    } else {
                        ""
                    },
                    (final_eval.unwrap_or(best_eval) / best_eval - 1.0) * 100.0
                )
            } else {
                String::new()
            }
        )),
        (Some(_), false) => reasons.push("no overfit".into()),
    }
    let explanation = format!(
        "{stars} star{}: {}",
        if stars == 1 { "" } else { "s" },
        reasons.join("; ")
    );
    Some(Quality {
        overall_score: stars,
        explanation,
        initial_train_loss: initial,
        final_train_loss: last,
        final_eval_loss: final_eval,
        perplexity: final_eval.map(f64::exp),
        loss_reduction: reduction,
        convergence,
        convergence_slope: relative_slope,
        eval_gap,
        eval_rising,
        overfit,
        steps: train.last().map_or(0, |p| p.0 as i32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A curve of `n` steps whose train loss follows `f(step)`, with evals every `every` steps.
    fn curve(
        n: i32,
        f: impl Fn(f64) -> f64,
        eval: impl Fn(f64) -> Option<f64>,
    ) -> Vec<MetricPoint> {
        (1..=n)
            .map(|s| MetricPoint {
                train_loss: Some(f(f64::from(s))),
                eval_loss: eval(f64::from(s)),
                ..MetricPoint::at(s)
            })
            .collect()
    }

    #[test]
    fn a_falling_curve_that_converges_without_overfit_gets_five_stars() {
        // 3.0 → ~1.0, flat by the end; eval follows train closely.
        let c = curve(
            100,
            |s| 1.0 + 2.0 * (-s / 15.0).exp(),
            |s| (s as i32 % 25 == 0).then(|| 1.1 + 2.0 * (-s / 15.0).exp()),
        );
        let q = rate(&c, None).unwrap();
        assert_eq!(q.overall_score, 5, "{q:?}");
        assert_eq!(q.convergence, Convergence::Converged);
        assert!(!q.overfit);
        assert!((q.final_eval_loss.unwrap() - 1.1).abs() < 0.01);
        assert!((q.perplexity.unwrap() - 1.1f64.exp()).abs() < 0.05);
        assert_eq!(
            q.explanation,
            "5 stars: loss fell 58%; converged; no overfit"
        );
    }

    #[test]
    fn a_curve_still_falling_says_more_epochs_would_help() {
        // 2.0 → 1.3 in a straight line: fell about 35%, and still falling.
        let c = curve(50, |s| 2.0 - 0.014 * s, |s| (s as i32 == 50).then_some(1.4));
        let q = rate(&c, Some(1.4)).unwrap();
        assert_eq!(q.overall_score, 4, "{q:?}");
        assert_eq!(q.convergence, Convergence::StillFalling);
        assert_eq!(
            q.explanation,
            "4 stars: loss fell 32%; eval loss still falling: more epochs would likely help; no overfit"
        );
    }

    #[test]
    fn a_flat_curve_gets_one_star() {
        let c = curve(40, |s| 6.64 - 0.0003 * s, |_| None);
        let q = rate(&c, Some(6.63)).unwrap();
        assert_eq!(q.overall_score, 1, "{q:?}");
        assert!(
            q.explanation.starts_with("1 star: loss fell 0%"),
            "{}",
            q.explanation
        );
    }

    #[test]
    fn overfitting_costs_a_star_and_never_adds_one() {
        // Train loss 2.0 → 0.4 (fell 80%), eval bottomed out at 1.2 then rose to 1.6.
        let c = curve(
            100,
            |s| 0.4 + 1.6 * (-s / 20.0).exp(),
            |s| match s as i32 {
                25 => Some(1.5),
                50 => Some(1.2),
                75 => Some(1.4),
                100 => Some(1.6),
                _ => None,
            },
        );
        let q = rate(&c, Some(1.6)).unwrap();
        assert!(q.overfit && q.eval_rising, "{q:?}");
        assert_eq!(
            q.overall_score, 4,
            "5 stars by reduction, one off for overfitting"
        );
        assert!(
            q.explanation
                .contains("overfitting: eval loss 1.19 above train, and rose 33% from its best"),
            "{}",
            q.explanation
        );
        // The original's max(2, stars − 1) made an overfit 1-star model 2 stars.
        let flat = curve(40, |_| 3.0, |s| (s as i32 == 40).then_some(3.8));
        let q = rate(&flat, Some(3.8)).unwrap();
        assert!(q.overfit);
        assert_eq!(q.overall_score, 1);
    }

    #[test]
    fn a_rising_loss_is_one_star_and_no_eval_caps_at_four() {
        let c = curve(40, |s| 2.0 + 0.02 * s, |_| None);
        let q = rate(&c, None).unwrap();
        assert_eq!((q.overall_score, q.convergence), (1, Convergence::Rising));
        assert!(q.explanation.contains("loss rose"), "{}", q.explanation);
        let c = curve(40, |s| 1.0 + 3.0 * (-s / 5.0).exp(), |_| None);
        let q = rate(&c, None).unwrap();
        assert_eq!(q.overall_score, 4, "{q:?}");
        assert!(q.explanation.contains("overfitting was not checked"));
        assert!(rate(&[], None).is_none());
    }
}
