//! Unit tests of the SVG charts: well-formed output for any input, labels, ticks, sizes.

use super::axis::MAX_TICKS;
use super::*;

/// Checks that `svg` is one well-formed element: tags balance, attributes are quoted,
/// no raw `<` or `&` outside markup and entities.
fn assert_well_formed(svg: &str) {
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert!(svg.ends_with("</svg>"));
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        assert_text_ok(text);
        let close = rest[open..].find('>').expect("unclosed tag") + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap());
        }
        for attr in tag.split('"').skip(1).step_by(2) {
            assert_text_ok(attr);
        }
        rest = &rest[close + 1..];
        if stack.is_empty() {
            assert!(rest.is_empty(), "content after the root: {rest}");
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
}

fn assert_text_ok(text: &str) {
    assert!(!text.contains('<') && !text.contains('>'), "{text}");
    for (i, _) in text.match_indices('&') {
        let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
        assert!(
            ["&lt;", "&gt;", "&amp;", "&quot;", "&#39;"].contains(&entity),
            "bare & in {text}"
        );
    }
}

/// Every number in the output's coordinates, as parsed from polyline points.
fn polyline_points(svg: &str) -> Vec<(f64, f64)> {
    svg.split("points=\"")
        .skip(1)
        .flat_map(|s| {
            s[..s.find('"').unwrap()]
                .split(' ')
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.into(),
        color: "#1f77b4".into(),
        points,
    }
}

#[test]
fn a_line_chart_is_well_formed_and_scales_points_into_the_plot() {
    let mut chart = LineChart::new("latency", Unit::Seconds);
    chart.series.push(series(
        "p99",
        (0..100)
            .map(|i| (1_700_000_000.0 + f64::from(i), 0.001 * f64::from(i)))
            .collect(),
    ));
    let svg = chart.render();
    assert_well_formed(&svg);
    let pts = polyline_points(&svg);
    assert_eq!(pts.len(), 100);
    // First point at the left edge and the bottom (value 0), last at the right edge.
    assert_eq!(pts[0], (LEFT, 200.0 - BOTTOM));
    assert_eq!(pts[99].0, 720.0 - RIGHT);
    // Time goes right, value goes up.
    assert!(pts.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 < w[0].1));
    assert!(
        pts.iter()
            .all(|&(_, y)| (TOP..=200.0 - BOTTOM).contains(&y))
    );
    // The highest value sits just under the top: the range is padded by 5 %.
    assert!(pts[99].1 > TOP && pts[99].1 < TOP + 10.0, "{:?}", pts[99]);
    // Duration labels on the value axis, clock time on the time axis.
    assert!(svg.contains(">50 ms</text>"), "{svg}");
    assert!(svg.contains(">22:13:30</text>"), "{svg}");
}

#[test]
fn labels_titles_and_colours_are_escaped() {
    let mut chart = LineChart::new("<script>alert(1)</script>", Unit::Count);
    chart.series.push(Series {
        name: "a&b \"c\"".into(),
        color: "red\"/><script>".into(),
        points: vec![(1.0, 1.0), (2.0, 2.0)],
    });
    chart.spans.push(Span {
        start: 1.0,
        end: 1.5,
        label: "</title><script>x</script>\u{1}".into(),
    });
    let svg = chart.render();
    assert_well_formed(&svg);
    assert!(!svg.contains("<script"));
    assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(svg.contains("a&amp;b &quot;c&quot;"));
    let mut bars = StackedBars::new(
        "t",
        Unit::Count,
        vec![Layer {
            name: "<b>".into(),
            color: "x'".into(),
        }],
    );
    bars.bars.push(Bar {
        start: 0.0,
        end: 1.0,
        values: vec![1.0],
    });
    let svg = bars.render();
    assert_well_formed(&svg);
    assert!(svg.contains("&lt;b&gt;") && svg.contains("x&#39;"));
    let svg = Timeline::new("&", (0.0, 10.0), chart.spans.clone()).render();
    assert_well_formed(&svg);
}

#[test]
fn empty_single_point_and_nan_data_render_without_panicking() {
    let empty = LineChart::new("empty", Unit::Seconds).render();
    assert_well_formed(&empty);
    assert!(!empty.contains("<polyline") && !empty.contains("<circle"));

    let mut one = LineChart::new("one", Unit::Seconds);
    one.series.push(series("p50", vec![(100.0, 0.5)]));
    let svg = one.render();
    assert_well_formed(&svg);
    assert_eq!(svg.matches("<circle class=\"point\"").count(), 1);

    // A NaN breaks the line in two; an infinite time is dropped too.
    let mut gaps = LineChart::new("gaps", Unit::Count);
    gaps.series.push(series(
        "s",
        vec![
            (1.0, 1.0),
            (2.0, 2.0),
            (3.0, f64::NAN),
            (4.0, 3.0),
            (5.0, 4.0),
            (f64::INFINITY, 1.0),
            (6.0, f64::NEG_INFINITY),
        ],
    ));
    let svg = gaps.render();
    assert_well_formed(&svg);
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert_eq!(polyline_points(&svg).len(), 4);
    assert!(!svg.contains("NaN") && !svg.contains("inf"));

    let mut nothing = StackedBars::new("bars", Unit::PerSecond, vec![]);
    nothing.bars.push(Bar {
        start: f64::NAN,
        end: 1.0,
        values: vec![f64::NAN],
    });
    assert_well_formed(&nothing.render());
    assert_well_formed(&Timeline::new("t", (5.0, 5.0), vec![]).render());
}

#[test]
fn huge_values_and_ranges_stay_finite_and_inside_the_plot() {
    let mut chart = LineChart::new("huge", Unit::Count);
    chart.series.push(series(
        "s",
        vec![
            (-1e308, -1e308),
            (0.0, 0.0),
            (1e308, 1e308),
            (1e308, f64::MAX),
        ],
    ));
    let svg = chart.render();
    assert_well_formed(&svg);
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    for (x, y) in polyline_points(&svg) {
        assert!(
            (0.0..=720.0).contains(&x) && (0.0..=200.0).contains(&y),
            "{x},{y}"
        );
    }
    // Bounded ticks whatever the range.
    assert!(svg.matches("class=\"tick\"").count() <= MAX_TICKS + 1);
    assert!(svg.matches("class=\"grid\"").count() <= MAX_TICKS + 1);
    let mut log = chart.clone();
    log.scale = Scale::Log;
    let svg = log.render();
    assert_well_formed(&svg);
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
}

#[test]
fn a_log_axis_has_decade_ticks_and_skips_values_that_are_not_positive() {
    let mut chart = LineChart::new("latency", Unit::Seconds);
    chart.scale = Scale::Log;
    chart.series.push(series(
        "max",
        vec![(0.0, 0.0005), (1.0, 0.0), (2.0, 0.02), (3.0, 2.0)],
    ));
    let svg = chart.render();
    assert_well_formed(&svg);
    for label in [
        ">100 µs<",
        ">1 ms<",
        ">10 ms<",
        ">100 ms<",
        ">1 s<",
        ">10 s<",
    ] {
        assert!(svg.contains(label), "{label} in {svg}");
    }
    // 0 is not drawable on a log axis: a lone point, then a line of two.
    assert_eq!(svg.matches("<circle").count(), 1);
    let pts = polyline_points(&svg);
    assert_eq!(pts.len(), 2);
    // Equal ratios are equal distances: 20 ms → 2 s is two decades of five.
    let plot = 200.0 - BOTTOM - TOP;
    assert!(
        (pts[0].1 - pts[1].1 - plot * 2.0 / 5.0).abs() < 0.2,
        "{pts:?}"
    );
}

#[test]
fn spans_are_shaded_with_their_label_and_never_thinner_than_a_mark() {
    let mut chart = LineChart::new("c", Unit::Count);
    chart.frame.x_range = Some((0.0, 86400.0));
    chart.spans.push(Span {
        start: 3600.0,
        end: 3600.5,
        label: "episode 0.5 s".into(),
    });
    let svg = chart.render();
    assert_well_formed(&svg);
    assert_eq!(svg.matches("class=\"episode-shade\"").count(), 1);
    assert!(svg.contains("<title>episode 0.5 s</title>"));
    assert!(svg.contains(&format!("width=\"{}\"", MIN_MARK_PX)), "{svg}");
    let strip = Timeline::new("day", (0.0, 86400.0), chart.spans.clone()).render();
    assert_eq!(strip.matches("class=\"episode-mark\"").count(), 1);
    // A day-long axis is labelled in hours and minutes.
    assert!(strip.contains(">06:00</text>"), "{strip}");
}

#[test]
fn stacked_bars_stack_layers_and_skip_zero_values() {
    let layers = ["ok", "recovered", "failed"]
        .iter()
        .map(|n| Layer {
            name: n.to_string(),
            color: "#000".into(),
        })
        .collect();
    let mut chart = StackedBars::new("ops", Unit::PerSecond, layers);
    chart.frame.x_range = Some((0.0, 10.0));
    for i in 0..10 {
        chart.bars.push(Bar {
            start: f64::from(i),
            end: f64::from(i + 1),
            values: vec![8.0, if i == 3 { 1.0 } else { 0.0 }, 0.0],
        });
    }
    let svg = chart.render();
    assert_well_formed(&svg);
    // One path per layer with data; the failed layer has none.
    assert_eq!(svg.matches("<path class=\"layer\"").count(), 2);
    let ok = svg.split("<path").nth(1).unwrap();
    assert_eq!(ok.matches('M').count(), 10);
    let recovered = svg.split("<path").nth(2).unwrap();
    assert_eq!(recovered.matches('M').count(), 1);
    // The recovered bar starts where the ok bar ends.
    let top_of_ok = ok.split("M").nth(4).unwrap().split(' ').nth(1).unwrap();
    let recovered_base = recovered
        .split('V')
        .nth(1)
        .unwrap()
        .split('h')
        .next()
        .unwrap();
    assert_eq!(top_of_ok.split('h').next().unwrap(), recovered_base);
    assert!(svg.contains(">8/s</text>"), "{svg}");
}

#[test]
fn values_and_times_have_readable_labels() {
    assert_eq!(format_value(Unit::Seconds, 0.00025), "250 µs");
    assert_eq!(format_value(Unit::Seconds, 0.0123), "12.3 ms");
    assert_eq!(format_value(Unit::Seconds, 1.5), "1.5 s");
    assert_eq!(format_value(Unit::Seconds, 120.0), "2 min");
    assert_eq!(format_value(Unit::Seconds, 5400.0), "1.5 h");
    assert_eq!(format_value(Unit::Count, 1500.0), "1.5k");
    assert_eq!(format_value(Unit::Count, 3e6), "3M");
    assert_eq!(format_value(Unit::Count, 1e300), "1.0e300");
    assert_eq!(format_value(Unit::PerSecond, 20.0), "20/s");
    assert_eq!(format_value(Unit::Ratio, 0.999), "99.9%");
    assert_eq!(format_value(Unit::Count, f64::NAN), "-");
    assert_eq!(
        format_time(TimeLabels::Utc, 1_700_000_000.0, 5.0),
        "22:13:20"
    );
    assert_eq!(
        format_time(TimeLabels::Utc, 1_700_000_000.0, 600.0),
        "22:13"
    );
    assert_eq!(
        format_time(TimeLabels::Utc, 1_700_000_000.0, 86400.0),
        "2023-11-14"
    );
    assert_eq!(format_time(TimeLabels::Utc, f64::NAN, 1.0), "");
    let since = TimeLabels::Elapsed { origin: 100.0 };
    assert_eq!(format_time(since, 250.0, 30.0), "+2m30s");
    assert_eq!(format_time(since, 100.0, 30.0), "+0s");
    assert_eq!(format_elapsed(90061.0), "1d1h1m1s");
    assert_eq!(format_elapsed(-5.0), "-5s");
}

#[test]
fn output_grows_linearly_with_the_points_given() {
    let chart = |n: u32| {
        let mut c = LineChart::new("n", Unit::Seconds);
        c.series.push(series(
            "s",
            (0..n).map(|i| (f64::from(i), f64::from(i % 7))).collect(),
        ));
        c.render().len()
    };
    let (small, big) = (chart(1000), chart(2000));
    let per_point = (big - small) as f64 / 1000.0;
    assert!(per_point < 16.0, "{per_point} bytes per point");
}
