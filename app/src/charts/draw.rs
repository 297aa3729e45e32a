//! Browser-only chart drawing with charming (ECharts). The ECharts script is loaded only on
//! pages that draw charts, once per page.
use charming::component::{Axis, Grid};
use charming::element::{AxisType, ItemStyle, Tooltip, Trigger};
use charming::series::{Bar, Line};
use charming::{Chart, WasmRenderer};
use engine::datasets::HistogramBucket;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;

/// ECharts' URL beside the page's stylesheet: under the bundle's content hash
/// (`/pkg/<version>/`, cached for good) when the page links it so, else `/pkg/`.
fn echarts_url(document: &web_sys::Document) -> String {
    let dir = document
        .query_selector("link[rel='stylesheet'][href$='/lora-pipeline.css']")
        .ok()
        .flatten()
        .and_then(|link| link.get_attribute("href"))
        .and_then(|href| href.rsplit_once('/').map(|(dir, _)| dir.to_owned()))
        .unwrap_or_else(|| "/pkg".to_owned());
    format!("{dir}/echarts.min.js")
}

/// Runs `draw` once the global `echarts` exists, loading it (once per page) if needed.
pub fn with_echarts(draw: impl FnOnce() + 'static) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let loaded = js_sys::Reflect::has(&window, &"echarts".into()).unwrap_or(false);
    if loaded {
        draw();
        return;
    }
    let Some(document) = window.document() else {
        return;
    };
    let url = echarts_url(&document);
    let script = match document.query_selector(&format!("script[src='{url}']")) {
        Ok(Some(existing)) => existing,
        _ => {
            let Ok(element) = document.create_element("script") else {
                return;
            };
            let _ = element.set_attribute("src", &url);
            if let Some(head) = document.head() {
                let _ = head.append_child(&element);
            }
            element
        }
    };
    let onload = Closure::once_into_js(draw);
    let _ = script.add_event_listener_with_callback("load", onload.unchecked_ref());
}

/// The width to draw at in the element `id` (at least 280 px), or `None` when it is not on the
/// page.
fn chart_width(id: &str) -> Option<u32> {
    let element = web_sys::window()?.document()?.get_element_by_id(id)?;
    Some(element.client_width().max(280) as u32)
}

/// Draws the bars into the element `id`; `false` when it could not.
pub fn draw_histogram(id: &str, buckets: &[HistogramBucket], max_seq_len: u32) -> bool {
    let Some(width) = chart_width(id) else {
        return false;
    };
    let labels: Vec<String> = buckets
        .iter()
        .map(|b| format!("{}–{}", b.from, b.to))
        .collect();
    let counts: Vec<i64> = buckets.iter().map(|b| b.count as i64).collect();
    let over_at = buckets.iter().position(|b| b.from > u64::from(max_seq_len));
    let chart = Chart::new()
        .grid(Grid::new().left(48).right(16).top(32).bottom(48))
        .tooltip(Tooltip::new().trigger(Trigger::Axis))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .data(labels)
                .name("tokens per example")
                .name_location(charming::element::NameLocation::Center)
                .name_gap(30),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name("examples"))
        .series(
            Bar::new()
                .name(match over_at {
                    Some(_) => {
                        format!("examples (over {max_seq_len} tokens from the orange bars)")
                    }
                    None => "examples".to_owned(),
                })
                .item_style(ItemStyle::new().color("#6366f1"))
                .data(counts),
        );
    WasmRenderer::new(width, 220).render(id, &chart).is_ok()
}

/// One line of a line chart: its name, colour and (x, y) points.
pub struct LineSeries {
    pub name: &'static str,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// Draws lines over a numeric x axis into the element `id`; `false` when it could not.
pub fn draw_lines(
    id: &str,
    x_name: &str,
    y_name: &str,
    series: Vec<LineSeries>,
    log_scale: bool,
) -> bool {
    use charming::element::{LineStyle, LineStyleType, Symbol};
    let Some(width) = chart_width(id) else {
        return false;
    };
    let mut chart = Chart::new()
        .grid(Grid::new().left(56).right(16).top(36).bottom(40))
        .tooltip(Tooltip::new().trigger(Trigger::Axis))
        .legend(charming::component::Legend::new().top(0))
        .x_axis(
            Axis::new()
                .type_(AxisType::Value)
                .name(x_name)
                .name_location(charming::element::NameLocation::Center)
                .name_gap(26)
                .min_interval(1),
        )
        .y_axis(
            Axis::new()
                .type_(if log_scale {
                    AxisType::Log
                } else {
                    AxisType::Value
                })
                .name(y_name)
                .scale(true),
        );
    for s in series {
        let mut style = LineStyle::new().color(s.color).width(2);
        if s.dashed {
            style = style.type_(LineStyleType::Dashed);
        }
        chart = chart.series(
            Line::new()
                .name(s.name)
                .show_symbol(s.points.len() < 40)
                .symbol(Symbol::Circle)
                .item_style(ItemStyle::new().color(s.color))
                .line_style(style)
                .data(
                    s.points
                        .into_iter()
                        .map(|(x, y)| vec![x, y])
                        .collect::<Vec<_>>(),
                ),
        );
    }
    // No animation: the chart is redrawn as points stream in.
    let chart = chart.animation(false);
    WasmRenderer::new(width, 240).render(id, &chart).is_ok()
}

/// `(step, value)` of a curve's points that have the value.
pub fn series(
    points: &[engine::jobs::MetricPoint],
    f: fn(&engine::jobs::MetricPoint) -> Option<f64>,
) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter_map(|p| {
            f(p).filter(|v| v.is_finite())
                .map(|v| (f64::from(p.step), v))
        })
        .collect()
}

/// The training and eval loss of a run (the job monitor and the model page).
pub fn draw_loss_curve(id: &str, points: &[engine::jobs::MetricPoint]) -> bool {
    draw_lines(
        id,
        "step",
        "loss",
        vec![
            LineSeries {
                name: "training loss",
                color: "#6366f1",
                points: series(points, |p| p.train_loss),
                dashed: false,
            },
            LineSeries {
                name: "eval loss",
                color: "#f59e0b",
                points: series(points, |p| p.eval_loss),
                dashed: true,
            },
        ],
        false,
    )
}

/// Draws dollar bars over category labels into the element `id`; `false` when it could not.
pub fn draw_money_bars(id: &str, x_name: &str, labels: Vec<String>, amounts: Vec<f64>) -> bool {
    let Some(width) = chart_width(id) else {
        return false;
    };
    let chart = Chart::new()
        .grid(Grid::new().left(64).right(16).top(24).bottom(48))
        .tooltip(Tooltip::new().trigger(Trigger::Axis))
        .x_axis(
            Axis::new()
                .type_(AxisType::Category)
                .data(labels)
                .name(x_name)
                .name_location(charming::element::NameLocation::Center)
                .name_gap(30),
        )
        .y_axis(Axis::new().type_(AxisType::Value).name("dollars"))
        .series(
            Bar::new()
                .name("cost")
                .item_style(ItemStyle::new().color("#6366f1"))
                .data(amounts),
        );
    WasmRenderer::new(width, 220).render(id, &chart).is_ok()
}
