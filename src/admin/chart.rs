//! Line charts of the last hour as inline SVG, drawn on the server: no script, no fonts or
//! files to fetch. Each minute with a non-zero value is a point with a tooltip.

use super::dashboard::escape;
use std::fmt::Write;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 170.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// One line: its name, colour and one value per minute (oldest first).
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub values: Vec<f64>,
}

/// An SVG chart of `series` (all of the same length) under `class`; `unit` follows values
/// in tooltips and on the axis.
pub fn line_chart(class: &str, title: &str, unit: &str, series: &[Series]) -> String {
    let minutes = series.first().map_or(0, |s| s.values.len());
    let top = nice_ceiling(
        series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .fold(0.0, f64::max),
    );
    let x = |i: usize| LEFT + (WIDTH - LEFT - RIGHT) * i as f64 / (minutes.max(2) - 1) as f64;
    let y = |v: f64| TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - v / top);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart {class}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(title)
    );
    let _ = write!(svg, "<title>{}</title>", escape(title));
    for fraction in [0.0, 0.5, 1.0] {
        let value = top * fraction;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" font-size="10" fill="#666">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 4.0,
            y(value) + 3.0,
            number(value),
            y = y(value),
        );
    }
    for (i, label) in [
        (0, "-60 min"),
        (minutes / 2, "-30 min"),
        (minutes.saturating_sub(1), "now"),
    ] {
        let anchor = if i == 0 {
            "start"
        } else if label == "now" {
            "end"
        } else {
            "middle"
        };
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" text-anchor="{anchor}" font-size="10" fill="#666">{label}</text>"##,
            x(i),
            HEIGHT - 6.0
        );
    }
    for line in series {
        let points: Vec<String> = line
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            line.color,
            points.join(" ")
        );
        for (i, value) in line.values.iter().enumerate().filter(|(_, v)| **v > 0.0) {
            let ago = minutes - 1 - i;
            let _ = write!(
                svg,
                r#"<circle class="point" cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"><title>{}: {} {} ({} min ago)</title></circle>"#,
                x(i),
                y(*value),
                line.color,
                escape(line.name),
                number(*value),
                escape(unit),
                ago
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The smallest of 1, 2, 5 × 10^n at or above `max` (at least 1), so the axis reads well.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|ceiling| *ceiling >= max)
        .unwrap_or(10.0 * magnitude)
}

/// Whole numbers without decimals, others with one.
fn number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_drawn_for_minutes_with_values_and_names_are_escaped() {
        let mut values = vec![0.0; 60];
        values[59] = 3.0;
        values[10] = 1.0;
        let svg = line_chart(
            "resolutions",
            "t",
            "requests",
            &[Series {
                name: "<b>",
                color: "#123",
                values,
            }],
        );
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("&lt;b&gt;: 3 requests (0 min ago)"));
        assert!(!svg.contains("<b>"));
    }

    #[test]
    fn the_axis_ends_at_a_round_number() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(500.0), 500.0);
    }
}
