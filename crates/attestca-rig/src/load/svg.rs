//! A small SVG chart of a run over time: throughput per second above, latency (p50, p99,
//! max per second) below. Hand-written SVG, no plotting dependency.

use std::fmt::Write as _;

use super::report::TimelinePoint;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const PANEL: f64 = 190.0;
const TOP1: f64 = 70.0;
const TOP2: f64 = TOP1 + PANEL + 70.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis (1, 2 or 5 × 10^k, at least `v`).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * magnitude)
}

struct Panel {
    top: f64,
    seconds: usize,
    y_max: f64,
}

impl Panel {
    fn x(&self, second: f64) -> f64 {
        let plot = WIDTH - LEFT - RIGHT;
        LEFT + plot * second / self.seconds.max(1) as f64
    }
    fn y(&self, v: f64) -> f64 {
        self.top + PANEL - PANEL * (v / self.y_max).clamp(0.0, 1.0)
    }

    fn axes(&self, out: &mut String, label: &str) {
        let _ = write!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{w}" height="{PANEL}" fill="#fafafa" stroke="#888"/>"##,
            top = self.top,
            w = WIDTH - LEFT - RIGHT
        );
        for i in 0..=4 {
            let v = self.y_max * f64::from(i) / 4.0;
            let y = self.y(v);
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end" font-size="11">{v}</text>"##,
                x2 = WIDTH - RIGHT,
                tx = LEFT - 6.0,
                ty = y + 4.0,
                v = trim_number(v)
            );
        }
        let step = (self.seconds / 10).max(1);
        for s in (0..=self.seconds).step_by(step) {
            let x = self.x(s as f64);
            let _ = write!(
                out,
                r#"<text x="{x:.1}" y="{y}" text-anchor="middle" font-size="11">{s}s</text>"#,
                y = self.top + PANEL + 15.0
            );
        }
        let _ = write!(
            out,
            r#"<text x="{LEFT}" y="{y}" font-size="13" font-weight="bold">{label}</text>"#,
            y = self.top - 8.0,
            label = escape(label)
        );
    }

    fn polyline(&self, out: &mut String, points: &[(f64, f64)], colour: &str, name: &str) {
        let mut coords = String::new();
        for (s, v) in points {
            let _ = write!(coords, "{:.1},{:.1} ", self.x(*s), self.y(*v));
        }
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{coords}"><title>{name}</title></polyline>"#,
            name = escape(name)
        );
    }
}

fn trim_number(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The chart as an SVG document. `latency_label` names what the latency is (e.g. "CA
/// latency, simpleenroll round trip").
pub fn chart(
    title: &str,
    subtitle: &str,
    latency_label: &str,
    timeline: &[TimelinePoint],
) -> String {
    let seconds = timeline.len().max(1);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = write!(
        out,
        r##"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text><text x="{LEFT}" y="44" font-size="12" fill="#444">{}</text>"##,
        escape(title),
        escape(subtitle)
    );

    // Throughput: completed (and failed) per second, as bars.
    let peak = timeline
        .iter()
        .map(|p| (p.completed + p.failed) as f64)
        .fold(0.0, f64::max);
    let panel = Panel {
        top: TOP1,
        seconds,
        y_max: nice_ceiling(peak),
    };
    panel.axes(&mut out, "throughput (per second): completed, failed");
    let bar = (panel.x(1.0) - panel.x(0.0)) * 0.8;
    for (i, p) in timeline.iter().enumerate() {
        let x = panel.x(i as f64) + bar * 0.125;
        let y_ok = panel.y(p.completed as f64);
        let _ = write!(
            out,
            r##"<rect x="{x:.1}" y="{y_ok:.1}" width="{bar:.1}" height="{h:.1}" fill="#4a7fc1"><title>{s}s: {c} completed, {f} failed</title></rect>"##,
            h = TOP1 + PANEL - y_ok,
            s = p.second,
            c = p.completed,
            f = p.failed
        );
        if p.failed > 0 {
            let y_fail = panel.y((p.completed + p.failed) as f64);
            let _ = write!(
                out,
                r##"<rect x="{x:.1}" y="{y_fail:.1}" width="{bar:.1}" height="{h:.1}" fill="#d0453a"/>"##,
                h = y_ok - y_fail
            );
        }
    }

    // Latency: p50, p99 and max of each second, as lines at the middle of the second.
    let peak = timeline.iter().map(|p| p.max_ms).fold(0.0, f64::max);
    let panel = Panel {
        top: TOP2,
        seconds,
        y_max: nice_ceiling(peak),
    };
    panel.axes(
        &mut out,
        &format!("{latency_label} (ms): p50, p99, max per second"),
    );
    let series = |f: fn(&TimelinePoint) -> f64| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .enumerate()
            .filter(|(_, p)| p.completed > 0)
            .map(|(i, p)| (i as f64 + 0.5, f(p)))
            .collect()
    };
    panel.polyline(&mut out, &series(|p| p.max_ms), "#bbbbbb", "max");
    panel.polyline(&mut out, &series(|p| p.p99_ms), "#d0453a", "p99");
    panel.polyline(&mut out, &series(|p| p.p50_ms), "#2a8f4a", "p50");
    let legend_y = TOP2 + PANEL + 40.0;
    for (i, (name, colour)) in [
        ("completed/s", "#4a7fc1"),
        ("failed/s", "#d0453a"),
        ("p50", "#2a8f4a"),
        ("p99", "#d0453a"),
        ("max", "#bbbbbb"),
    ]
    .iter()
    .enumerate()
    {
        let x = LEFT + 130.0 * i as f64;
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/><text x="{tx}" y="{ty}" font-size="12">{name}</text>"#,
            y = legend_y - 10.0,
            tx = x + 16.0,
            ty = legend_y
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_one_svg_element_with_data() {
        let timeline: Vec<TimelinePoint> = (1..=5)
            .map(|s| TimelinePoint {
                second: s,
                completed: 100 * s,
                failed: u64::from(s == 3),
                p50_ms: 1.0,
                p99_ms: 2.5,
                max_ms: 4.0,
            })
            .collect();
        let svg = chart("t <1>", "s & s", "latency", &timeline);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("t &lt;1&gt;") && svg.contains("s &amp; s"));
        assert!(svg.contains("3s: 300 completed, 1 failed"));
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(1800.0), 2000.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
    }
}
