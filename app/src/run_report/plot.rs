//! metrics.svg: every scalar metric of every phase per round, one line each, with a
//! legend. SVG because it needs no font files or system libraries: plotters writes text
//! as `<text>` elements and the viewer's fonts draw it.

use crate::report::{Round, metric_columns};
use plotters::prelude::*;

/// `num-examples` is a weight, not a quality of the model: it would only squash the other
/// lines. (Lists have no single value per round and are left out by `series`.)
fn plotted(key: &str) -> bool {
    key != "num-examples"
}

/// One plotted metric: its legend label and its `(round, value)` points.
pub(crate) struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// The metrics to plot, named like the table's columns (`evaluate eval_acc`).
pub(crate) fn series(rounds: &[Round]) -> Vec<Series> {
    metric_columns(rounds)
        .into_iter()
        .filter(|(_, _, key)| plotted(key))
        .filter_map(|(phase, get, key)| {
            let points: Vec<(f64, f64)> = rounds
                .iter()
                .filter_map(|r| {
                    let value = get(&r.summary)?.get(&key).ok()?.as_f64()?;
                    value.is_finite().then_some((r.summary.round as f64, value))
                })
                .collect();
            (!points.is_empty()).then(|| Series {
                label: format!("{phase} {key}"),
                points,
            })
        })
        .collect()
}

/// The SVG document. Drawing into a string cannot fail for lack of a font or a file; a
/// plotters error (none is expected) leaves a plot with what was drawn before it.
pub(super) fn svg(title: &str, rounds: &[Round]) -> String {
    let series = series(rounds);
    let mut out = String::new();
    if let Err(e) = draw(&mut out, title, &series) {
        tracing::warn!(error = %e, "the metrics plot is incomplete");
    }
    out
}

fn draw(out: &mut String, title: &str, series: &[Series]) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    let root = SVGBackend::with_string(out, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (x_min, x_max) = bounds(xs, 1.0);
    let (y_min, y_max) = bounds(ys, 0.0);
    let y_pad = ((y_max - y_min) * 0.05).max(1e-9);
    let caption = if series.is_empty() {
        format!("{title}: no metrics recorded")
    } else {
        title.to_string()
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x_min - 0.5..x_max + 0.5, y_min - y_pad..y_max + y_pad)
        .map_err(err)?;
    let rounds = (x_max - x_min) as usize + 1;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("value")
        .x_labels(rounds.min(20) + 2)
        .x_label_formatter(&|x| {
            // Rounds are whole numbers: label only those.
            if (x - x.round()).abs() < 1e-6 {
                format!("{}", x.round())
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        // A dot per round, so that a one-round run still shows its values.
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// The smallest and largest of `values`, or `default..default + 1` when there are none.
fn bounds(values: impl Iterator<Item = f64>, default: f64) -> (f64, f64) {
    values
        .fold(None, |acc: Option<(f64, f64)>, v| {
            Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
        })
        .unwrap_or((default, default + 1.0))
}
