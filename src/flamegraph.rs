//! Folded stacks -> SVG flamegraph, with inferno, for people without `go tool pprof`.

#![forbid(unsafe_code)]

/// Renders the flamegraph of `folded` (stack, CPU µs) titled with the profile's name.
pub(crate) fn render(name: &str, folded: &[(String, u64)]) -> Vec<u8> {
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = format!("{name} (CPU)");
    opts.count_name = "µs CPU".to_string();
    let lines: Vec<String> = folded
        .iter()
        .filter(|(_, micros)| *micros > 0)
        .map(|(stack, micros)| format!("{stack} {micros}"))
        .collect();
    let mut svg = Vec::new();
    if lines.is_empty() {
        // inferno refuses empty input ("No stack counts found"); an empty profile still
        // deserves a file that says what happened.
        let _ = inferno::flamegraph::from_lines(&mut opts, ["no samples 1"], &mut svg);
        return svg;
    }
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)
        .expect("inferno renders folded stacks we produced");
    svg
}
