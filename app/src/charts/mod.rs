//! Charts. The drawing (charming over ECharts, `draw`) exists only in the browser; the islands
//! here render the chart's box on the server and draw into it once hydrated. ECharts is loaded
//! only on pages that draw.

#[cfg(feature = "hydrate")]
mod draw;
#[cfg(feature = "hydrate")]
pub use draw::*;

use engine::jobs::MetricPoint;
use leptos::prelude::*;

/// Dollar bars over category labels (the Costs page), an island.
#[cfg_attr(any(feature = "ssr", feature = "bundle-charts"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-charts")), component)]
pub fn MoneyBars(
    #[prop(into)] id: String,
    #[prop(into)] x_name: String,
    labels: Vec<String>,
    amounts: Vec<f64>,
) -> impl IntoView {
    #[cfg(feature = "hydrate")]
    {
        let id = id.clone();
        Effect::new(move || {
            let (id, x_name, labels, amounts) =
                (id.clone(), x_name.clone(), labels.clone(), amounts.clone());
            with_echarts(move || {
                draw_money_bars(&id, &x_name, labels, amounts);
            });
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (x_name, labels, amounts);
    view! { <div id=id class="chart" aria-hidden="true"></div> }
}

/// A run's training and eval loss (the model page), an island.
#[cfg_attr(any(feature = "ssr", feature = "bundle-charts"), island)]
#[cfg_attr(not(any(feature = "ssr", feature = "bundle-charts")), component)]
pub fn LossChart(#[prop(into)] id: String, points: Vec<MetricPoint>) -> impl IntoView {
    #[cfg(feature = "hydrate")]
    {
        let id = id.clone();
        Effect::new(move || {
            let (id, points) = (id.clone(), points.clone());
            with_echarts(move || {
                draw_loss_curve(&id, &points);
            });
        });
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = points;
    view! { <div id=id class="chart" aria-hidden="true"></div> }
}
