//! The flood benchmark's plots (PNG, drawn with `plotters`): for each metric of the calls under
//! flood, one panel per traffic, the offered rate across, one line per filter.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::flood_calls::{Cell, FILTERS};

/// The font the plots are labelled in (Debian's `fonts-dejavu-core`, which the bootstrap
/// installs).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One plotted metric: its file name, title, axis label and how a cell gives it.
struct Metric {
    file: &'static str,
    title: &'static str,
    axis: &'static str,
    value: fn(&Cell) -> f64,
}

const METRICS: [Metric; 3] = [
    Metric {
        file: "flood-cpu.png",
        title: "Receiving CPU per packet under a flood",
        axis: "ns per packet received",
        value: |c| c.cpu_ns,
    },
    Metric {
        file: "flood-leaked.png",
        title: "Flood packets reaching the SIP server",
        axis: "packets per second",
        value: |c| c.leaked,
    },
    Metric {
        file: "flood-calls.png",
        title: "Legitimate calls completed under a flood",
        axis: "% of the calls placed",
        value: |c| 100.0 * c.completed(),
    },
];

/// Draws the plots of `results` (by traffic: the cells by filter, then by rate) into `dir`;
/// the files written.
pub(crate) fn draw(results: &[(&str, Vec<Vec<Cell>>)], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let font =
        std::fs::read(FONT).map_err(|e| anyhow::anyhow!("{FONT}: {e} (Debian package fonts-dejavu-core)"))?;
    // The font must outlive every chart: it is read once per run.
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice()))
        .map_err(|_| anyhow::anyhow!("{FONT} is not a font plotters can read"))?;
    std::fs::create_dir_all(dir)?;
    METRICS.iter().map(|m| draw_metric(m, results, dir)).collect()
}

fn draw_metric(m: &Metric, results: &[(&str, Vec<Vec<Cell>>)], dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join(m.file);
    {
        // Two panels a row, as many rows as the traffics need.
        let rows = results.len().div_ceil(2);
        let height = 100 + 450 * u32::try_from(rows).unwrap_or(1);
        let root = BitMapBackend::new(&path, (1400, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(m.title, ("sans-serif", 30))?;
        let panels = root.split_evenly((rows, 2));
        for (panel, (traffic, rows)) in panels.iter().zip(results) {
            let points = |row: &Vec<Cell>| -> Vec<(f64, f64)> {
                row.iter().map(|c| (c.offered / 1e3, (m.value)(c))).filter(|(x, _)| *x > 0.0).collect()
            };
            let all: Vec<(f64, f64)> = rows.iter().flat_map(points).collect();
            let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.2;
            let x_min = all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min).min(x_max / 2.0) / 1.2;
            let y_max = all.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
            let mut chart = ChartBuilder::on(panel)
                .caption(*traffic, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(75)
                .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..y_max)?;
            chart
                .configure_mesh()
                .x_desc("offered, thousand packets a second")
                .y_desc(m.axis)
                .label_style(("sans-serif", 14))
                .draw()?;
            for (i, (filter, row)) in FILTERS.iter().zip(rows).enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let line = points(row);
                chart
                    .draw_series(LineSeries::new(line.clone(), color.stroke_width(3)))?
                    .label(*filter)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
                chart.draw_series(line.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
    }
    Ok(path)
}
