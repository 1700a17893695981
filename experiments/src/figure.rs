//! Figures beside the tables: each drawn as SVG here (axes, ticks, series, legend; no plotting
//! dependency) and rasterised to PNG with resvg. A figure is built from a run's summary tables,
//! never from raw samples, so it shows exactly what the table says.

use std::fmt::Write as _;

use anyhow::Context;

use crate::report::{Cell, Table};

/// A chart: lines over a numeric x axis, or grouped bars over categories.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File stem (`<id>.svg`, `<id>.png`) and LaTeX label.
    pub id: String,
    /// Caption.
    pub title: String,
    /// Axis labels.
    pub x_label: String,
    pub y_label: String,
    /// What is plotted.
    pub kind: Kind,
}

/// The chart's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// One line per series; x on a log2 scale when `log_x`.
    Lines { log_x: bool, series: Vec<Line> },
    /// Categories along x, one bar per series in each.
    Bars { categories: Vec<String>, series: Vec<(String, Vec<f64>)> },
}

/// A named line: its (x, y) points.
pub type Line = (String, Vec<(f64, f64)>);

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Round tick values from 0 to at least `max`: (step, count).
fn ticks(max: f64) -> (f64, usize) {
    let max = if max > 0.0 && max.is_finite() { max } else { 1.0 };
    let rough = max / 5.0;
    let mag = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * mag);
    (step, (max / step).ceil() as usize)
}

fn label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl Figure {
    /// The figure as a standalone SVG document.
    pub fn svg(&self) -> String {
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"DejaVu Sans, Helvetica, Arial, \
             sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
            LEFT + pw / 2.0,
            escape(&self.title)
        );
        let y_max = match &self.kind {
            Kind::Lines { series, .. } => {
                series.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).fold(0.0, f64::max)
            }
            Kind::Bars { series, .. } => {
                series.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0, f64::max)
            }
        };
        let (step, n) = ticks(y_max);
        let top = step * n as f64;
        let y = |v: f64| TOP + ph - v / top * ph;
        for i in 0..=n {
            let v = step * i as f64;
            let _ = writeln!(
                s,
                "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT + pw,
                LEFT - 6.0,
                y(v) + 4.0,
                label(v),
                y = y(v)
            );
        }
        let mut legend = Vec::new();
        match &self.kind {
            Kind::Lines { log_x, series } => {
                let mut xs: Vec<f64> =
                    series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).collect();
                xs.sort_by(f64::total_cmp);
                xs.dedup();
                let t = |v: f64| if *log_x { v.max(1e-9).log2() } else { v };
                let (lo, hi) = (t(xs[0]), t(xs[xs.len() - 1]));
                let span = if hi > lo { hi - lo } else { 1.0 };
                let x = |v: f64| LEFT + 20.0 + (t(v) - lo) / span * (pw - 40.0);
                for &v in &xs {
                    let _ = writeln!(
                        s,
                        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                        x(v),
                        TOP + ph + 18.0,
                        label(v)
                    );
                }
                for (i, (name, points)) in series.iter().enumerate() {
                    let color = COLORS[i % COLORS.len()];
                    let path: Vec<String> =
                        points.iter().map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b))).collect();
                    let _ = writeln!(
                        s,
                        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" \
                         points=\"{}\"/>",
                        path.join(" ")
                    );
                    for &(a, b) in points {
                        let _ = writeln!(
                            s,
                            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                            x(a),
                            y(b)
                        );
                    }
                    legend.push((name.clone(), color));
                }
            }
            Kind::Bars { categories, series } => {
                let slot = pw / categories.len().max(1) as f64;
                let bar = slot * 0.8 / series.len().max(1) as f64;
                for (c, name) in categories.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                        LEFT + slot * (c as f64 + 0.5),
                        TOP + ph + 18.0,
                        escape(name)
                    );
                }
                for (i, (name, values)) in series.iter().enumerate() {
                    let color = COLORS[i % COLORS.len()];
                    for (c, &v) in values.iter().enumerate() {
                        let x0 = LEFT + slot * c as f64 + slot * 0.1 + bar * i as f64;
                        let _ = writeln!(
                            s,
                            "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" \
                             fill=\"{color}\"/>",
                            y(v),
                            TOP + ph - y(v)
                        );
                    }
                    legend.push((name.clone(), color));
                }
            }
        }
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"black\"/>\
             <line x1=\"{LEFT}\" x2=\"{}\" y1=\"{b}\" y2=\"{b}\" stroke=\"black\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
             <text transform=\"translate(18 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            TOP + ph,
            LEFT + pw,
            LEFT + pw / 2.0,
            HEIGHT - 16.0,
            escape(&self.x_label),
            TOP + ph / 2.0,
            escape(&self.y_label),
            b = TOP + ph
        );
        for (i, (name, color)) in legend.iter().enumerate() {
            let ly = TOP + 10.0 + 20.0 * i as f64;
            let _ = writeln!(
                s,
                "<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"10\" fill=\"{color}\"/>\
                 <text x=\"{}\" y=\"{}\">{}</text>",
                WIDTH - RIGHT + 16.0,
                ly,
                WIDTH - RIGHT + 36.0,
                ly + 9.0,
                escape(name)
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// The SVG rasterised (system fonts for the text).
    ///
    /// # Errors
    /// The SVG does not parse, or PNG encoding failed.
    pub fn png(&self) -> anyhow::Result<Vec<u8>> {
        let mut options = resvg::usvg::Options::default();
        options.fontdb_mut().load_system_fonts();
        let tree = resvg::usvg::Tree::from_str(&self.svg(), &options).context("parse the SVG")?;
        let size = tree.size().to_int_size();
        let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height())
            .context("allocate the image")?;
        resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
        pixmap.encode_png().context("encode the PNG")
    }
}

/// Writes each figure as `<id>.svg` and `<id>.png` into `dir` (beside the tables' LaTeX);
/// returns the LaTeX that includes them.
///
/// # Errors
/// File system errors, or a figure that does not rasterise.
pub fn write_all(dir: &std::path::Path, figures: &[Figure]) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut tex = String::new();
    for f in figures {
        std::fs::write(dir.join(format!("{}.svg", f.id)), f.svg())?;
        std::fs::write(dir.join(format!("{}.png", f.id)), f.png()?)?;
        let _ = writeln!(
            tex,
            "\\begin{{figure}}[htbp]\\centering\\includegraphics[width=\\linewidth]{{{}.png}}\
             \\caption{{{}}}\\label{{fig:{}}}\\end{{figure}}",
            f.id,
            crate::report::latex_escape(&f.title),
            f.id
        );
    }
    Ok(tex)
}

/// A table's column by header.
fn column(t: &Table, header: &str) -> Option<usize> {
    t.columns.iter().position(|c| c == header)
}

fn number(c: &Cell) -> Option<f64> {
    match c {
        Cell::Int(n) => Some(*n as f64),
        Cell::Num(v, _) => Some(*v),
        Cell::Text(_) => None,
    }
}

fn text(c: &Cell) -> String {
    match c {
        Cell::Text(s) => s.clone(),
        other => number(other).map(trim).unwrap_or_default(),
    }
}

/// The figures a run's tables make (those whose tables are present).
pub fn from_tables(tables: &[&Table]) -> Vec<Figure> {
    let find = |id: &str| tables.iter().find(|t| t.id == id).copied();
    let mut out = Vec::new();
    if let Some(t) = find("announce") {
        out.extend(announce(t));
    }
    if let Some(t) = find("receipts_batches") {
        out.extend(receipts(t));
    }
    if let Some(t) = find("client_download") {
        out.extend(download(t));
    }
    out
}

/// Lines of `y` over `x`, one per distinct value of `group`.
fn grouped(t: &Table, group: &str, x: &str, y: &str) -> Option<Vec<Line>> {
    let (g, xi, yi) = (column(t, group)?, column(t, x)?, column(t, y)?);
    let mut series: Vec<Line> = Vec::new();
    for row in &t.rows {
        let name = text(&row[g]);
        let point = (number(&row[xi])?, number(&row[yi])?);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, points)) => points.push(point),
            None => series.push((name, vec![point])),
        }
    }
    Some(series)
}

fn announce(t: &Table) -> Vec<Figure> {
    let mut out = Vec::new();
    if let Some(series) = grouped(t, "protocol", "serving threads", "responses/s") {
        out.push(Figure {
            id: "fig_announce_throughput".into(),
            title: "Announce throughput against serving threads".into(),
            x_label: "serving threads".into(),
            y_label: "responses per second".into(),
            kind: Kind::Lines { log_x: true, series },
        });
    }
    let mut lines = Vec::new();
    for q in ["p50 (µs)", "p99 (µs)"] {
        for (name, points) in grouped(t, "protocol", "serving threads", q).unwrap_or_default() {
            lines.push((format!("{name} {}", q.trim_end_matches(" (µs)")), points));
        }
    }
    if !lines.is_empty() {
        out.push(Figure {
            id: "fig_announce_latency".into(),
            title: "Announce latency percentiles".into(),
            x_label: "serving threads".into(),
            y_label: "latency (µs)".into(),
            kind: Kind::Lines { log_x: true, series: lines },
        });
    }
    out
}

/// Pipeline cost per receipt against batch size: one signer per receipt, and 16 signers.
fn receipts(t: &Table) -> Vec<Figure> {
    let cols = ["batch size", "signers", "one by one (ms)", "blst batch (ms)", "pipeline (ms)"]
        .map(|c| column(t, c));
    let [Some(b), Some(s), Some(one), Some(blst), Some(pipe)] = cols else { return Vec::new() };
    let mut series: Vec<Line> = Vec::new();
    for row in &t.rows {
        let (Some(batch), Some(signers)) = (number(&row[b]), number(&row[s])) else { continue };
        let shape = if signers == batch { "a signer each" } else { "16 signers" };
        for (method, col) in [("one by one", one), ("blst", blst), ("pipeline", pipe)] {
            // One by one does not depend on the signers: drawn once.
            if method == "one by one" && signers != batch {
                continue;
            }
            let Some(ms) = number(&row[col]) else { continue };
            let name = if method == "one by one" {
                method.to_owned()
            } else {
                format!("{method}, {shape}")
            };
            let point = (batch, ms * 1000.0 / batch);
            match series.iter_mut().find(|(n, _)| *n == name) {
                Some((_, p)) => p.push(point),
                None => series.push((name, vec![point])),
            }
        }
    }
    for (_, points) in &mut series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    if series.is_empty() {
        return Vec::new();
    }
    vec![Figure {
        id: "fig_receipt_verification".into(),
        title: "Receipt verification cost against batch size".into(),
        x_label: "receipts per batch".into(),
        y_label: "µs per receipt".into(),
        kind: Kind::Lines { log_x: true, series },
    }]
}

/// Download throughput with receipts off and on, per speed.
fn download(t: &Table) -> Vec<Figure> {
    let (Some(speed), Some(off), Some(on)) =
        (column(t, "speed"), column(t, "off (MB/s)"), column(t, "on (MB/s)"))
    else {
        return Vec::new();
    };
    let categories: Vec<String> = t.rows.iter().map(|r| text(&r[speed])).collect();
    let values = |c: usize| t.rows.iter().map(|r| number(&r[c]).unwrap_or(0.0)).collect();
    vec![Figure {
        id: "fig_client_download".into(),
        title: "Client download with receipts off and on".into(),
        x_label: "link".into(),
        y_label: "MB/s".into(),
        kind: Kind::Bars {
            categories,
            series: vec![("receipts off".into(), values(off)), ("receipts on".into(), values(on))],
        },
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(9.3), (2.0, 5));
        assert_eq!(ticks(625_161.0), (200_000.0, 4));
        assert_eq!(ticks(0.0), (0.2, 5));
        assert_eq!(label(600_000.0), "600k");
        assert_eq!(label(2.5), "2.5");
    }

    #[test]
    fn a_figure_renders_to_svg_and_png() {
        let f = Figure {
            id: "t".into(),
            title: "a <title>".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            kind: Kind::Lines {
                log_x: true,
                series: vec![("s".into(), vec![(1.0, 2.0), (8.0, 5.0)])],
            },
        };
        let svg = f.svg();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt;title&gt;"));
        assert_eq!(svg.matches("<circle ").count(), 2);
        let png = f.png().unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
