//! Bar charts with error bars, drawn as SVG on the server (no scripts, no external assets):
//! one bar per bin of a grouped count, the whisker spanning the released 95% interval.

use std::fmt::Write as _;

use super::esc;

/// One bar.
pub struct Bar<'a> {
    /// Bin label.
    pub label: &'a str,
    /// Released (noisy) value.
    pub value: i128,
    /// Half-width of its interval.
    pub half_width: u64,
}

/// A "nice" step for about `ticks` ticks up to `max`.
fn step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// The chart as an `<svg>` element titled `title` (also its accessible name).
pub fn bars(title: &str, bars: &[Bar<'_>]) -> String {
    let n = bars.len().max(1) as f64;
    let (left, top, bottom, bar_w) = (64.0, 28.0, 150.0, 18.0);
    let width = left + n * bar_w + 20.0;
    let plot_h = 260.0;
    let height = top + plot_h + bottom;
    let hi = bars
        .iter()
        .map(|b| b.value as f64 + b.half_width as f64)
        .fold(1.0, f64::max);
    let lo = bars
        .iter()
        .map(|b| b.value as f64 - b.half_width as f64)
        .fold(0.0, f64::min);
    let st = step(hi - lo, 5.0);
    let (lo, hi) = ((lo / st).floor() * st, (hi / st).ceil() * st);
    let y = |v: f64| top + plot_h * (hi - v) / (hi - lo).max(1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {width:.0} {height:.0}" role="img" aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">{}</title>"#,
        esc(title)
    );
    // Grid and axis labels.
    let mut t = lo;
    while t <= hi + st / 2.0 {
        let yy = y(t);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#d0d7de" stroke-width="1"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#1f2328">{t:.0}</text>"##,
            width - 10.0,
            left - 6.0,
            yy + 4.0
        );
        t += st;
    }
    for (i, b) in bars.iter().enumerate() {
        let x = left + i as f64 * bar_w;
        let v = b.value as f64;
        let (y0, y1) = (y(v.max(0.0)), y(v.min(0.0)));
        let (e0, e1) = (y(v + b.half_width as f64), y(v - b.half_width as f64));
        let cx = x + bar_w / 2.0;
        let _ = write!(
            s,
            r##"<g><title>{}: {} ± {} (95%)</title><rect x="{:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="#0b62c4"/><line x1="{cx:.1}" x2="{cx:.1}" y1="{e0:.1}" y2="{e1:.1}" stroke="#1f2328" stroke-width="1.5"/><line x1="{:.1}" x2="{:.1}" y1="{e0:.1}" y2="{e0:.1}" stroke="#1f2328" stroke-width="1.5"/><line x1="{:.1}" x2="{:.1}" y1="{e1:.1}" y2="{e1:.1}" stroke="#1f2328" stroke-width="1.5"/><text transform="translate({:.1},{:.1}) rotate(-60)" font-size="10" text-anchor="end" fill="#1f2328">{}</text></g>"##,
            esc(b.label),
            b.value,
            b.half_width,
            x + 2.0,
            bar_w - 4.0,
            (y1 - y0).max(0.5),
            cx - 4.0,
            cx + 4.0,
            cx - 4.0,
            cx + 4.0,
            cx + 3.0,
            top + plot_h + 8.0,
            esc(&shorten(b.label, 24)),
        );
    }
    let zero = y(0.0);
    let _ = write!(
        s,
        r##"<line x1="{left}" x2="{:.1}" y1="{zero:.1}" y2="{zero:.1}" stroke="#1f2328" stroke-width="1"/></svg>"##,
        width - 10.0
    );
    s
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bin_gets_a_bar_and_labels_are_escaped() {
        let bars_in = [
            Bar {
                label: "A<script>",
                value: 10,
                half_width: 2,
            },
            Bar {
                label: "B",
                value: -1,
                half_width: 3,
            },
            Bar {
                label: "C",
                value: 0,
                half_width: 1,
            },
        ];
        let svg = bars("t & t", &bars_in);
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("A&lt;script&gt;: 10 ± 2"));
        assert!(svg.contains("t &amp; t"));
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(step(1000.0, 5.0), 200.0);
        assert_eq!(step(7.0, 5.0), 2.0);
        assert_eq!(step(0.0, 5.0), 1.0);
    }
}
