//! Learning curves as SVG (plotters; text as SVG <text>, no font files needed).

use std::path::Path;

use plotters::prelude::*;

use super::EvalReport;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Accuracy against k per strategy (with ±1 s.e. bands), the baseline at k = 0 and the ceiling as
/// a dashed line.
pub fn write_svg(report: &EvalReport, title: &str, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let lowest = report
        .curves
        .values()
        .flatten()
        .map(|p| p.accuracy - p.se)
        .fold(report.baseline.accuracy, f64::min);
    let y_min = ((lowest - 0.02) * 50.0).floor() / 50.0;
    let y_max = ((report.ceiling.accuracy + 0.02) * 50.0).ceil() / 50.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..report.questions as f64, y_min..y_max)?;
    chart
        .configure_mesh()
        .x_desc("questions asked (k)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("held-out pairwise accuracy")
        .draw()?;
    for (i, (strategy, points)) in report.curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let line = std::iter::once((0.0, report.baseline.accuracy))
            .chain(points.iter().map(|p| (p.k as f64, p.accuracy)));
        let band: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.k as f64, p.accuracy + p.se))
            .chain(points.iter().rev().map(|p| (p.k as f64, p.accuracy - p.se)))
            .collect();
        chart.draw_series(std::iter::once(Polygon::new(band, colour.mix(0.15))))?;
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))?
            .label(strategy.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    let ceiling = report.ceiling.accuracy;
    chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, ceiling), (report.questions as f64, ceiling)],
            6,
            4,
            BLACK.stroke_width(1),
        ))?
        .label(format!("ceiling {ceiling:.3} (per-user fit, in-sample)"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
