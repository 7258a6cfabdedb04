//! `GET /metrics`: scraped from every node of a demo before and after a
//! load; the text must be valid Prometheus exposition (checked by a strict
//! parser below) and the counters must move: requests, commits, WAL bytes,
//! the fsync histogram, HTTP requests; the status gauges must be there per
//! group and role.

mod http_common;

use http_common::Demo;
use std::collections::BTreeMap;

const OFFSET: u16 = 660;

/// One scrape: every series (`name{sorted labels}`) and its value, and each
/// family's type.
#[derive(Debug)]
struct Exposition {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// The sum of every series of `name` whose labels include all of `with`.
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| {
                let (n, labels) = k.split_once('{').map_or((k.as_str(), ""), |(n, l)| (n, l));
                n == name && with.iter().all(|(l, v)| labels.contains(&format!("{l}=\"{v}\"")))
            })
            .map(|(_, v)| v)
            .sum()
    }

    fn has(&self, name: &str, with: &[(&str, &str)]) -> bool {
        self.samples.keys().any(|k| {
            let (n, labels) = k.split_once('{').map_or((k.as_str(), ""), |(n, l)| (n, l));
            n == name && with.iter().all(|(l, v)| labels.contains(&format!("{l}=\"{v}\"")))
        })
    }
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("`{s}` is not a sample value")),
    }
}

/// Parses `{a="x",b="y"}` (escapes `\\`, `\"`, `\n`); returns the labels
/// and the rest of the line.
type Labels = Vec<(String, String)>;

fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("expected `{`")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let (name, r) = rest.split_once("=\"").ok_or_else(|| format!("a label without =\" in `{s}`"))?;
        if !is_name(name, false) {
            return Err(format!("bad label name `{name}`"));
        }
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated label value in `{s}`")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in `{s}`")),
                },
                Some((_, '\n')) => return Err("a newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.iter().any(|(n, _): &(String, String)| n == name) {
            return Err(format!("label `{name}` twice in `{s}`"));
        }
        labels.push((name.to_string(), value));
        rest = &r[end + 1..];
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.starts_with('}') => {}
            None => return Err(format!("labels not separated by commas in `{s}`")),
        }
    }
}

/// A strict reading of the Prometheus text format 0.0.4: every line a
/// HELP, a TYPE (once per family, before its samples) or a sample of a
/// typed family; no series twice; histogram buckets cumulative, with a
/// `+Inf` bucket equal to `_count`; counters never negative.
fn check_exposition(text: &str) -> Result<Exposition, String> {
    const TYPES: [&str; 5] = ["counter", "gauge", "histogram", "summary", "untyped"];
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut seen_samples_of: std::collections::BTreeSet<String> = Default::default();
    // (family, labels without le) -> [(le, value)]
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    for (no, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: `{line}`", no + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').ok_or_else(|| at("TYPE without a type".into()))?;
            if !is_name(name, true) || !TYPES.contains(&ty) {
                return Err(at("bad TYPE".into()));
            }
            if seen_samples_of.contains(name) {
                return Err(at(format!("TYPE of `{name}` after its samples")));
            }
            if types.insert(name.to_string(), ty.to_string()).is_some() {
                return Err(at(format!("TYPE of `{name}` twice")));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !is_name(name, true) {
                return Err(at("bad HELP".into()));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(at(format!("bad metric name `{name}`")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (vec![], &line[name_end..])
        };
        let mut fields = rest.strip_prefix(' ').ok_or_else(|| at("no space before the value".into()))?.split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| at(format!("bad timestamp `{ts}`")))?;
        }
        if fields.next().is_some() {
            return Err(at("extra fields after the value".into()));
        }
        // The family a sample belongs to.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                matches!(types.get(base).map(String::as_str), Some("histogram" | "summary")).then_some(base)
            })
            .unwrap_or(name);
        let ty = types.get(family).ok_or_else(|| at(format!("a sample of `{family}`, which has no TYPE")))?;
        // NaN is no count either.
        if ty == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("a negative counter".into()));
        }
        seen_samples_of.insert(family.to_string());
        let mut sorted = labels.clone();
        sorted.sort();
        let series = if sorted.is_empty() {
            name.to_string()
        } else {
            let l: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", l.join(","))
        };
        if samples.insert(series.clone(), value).is_some() {
            return Err(at(format!("series `{series}` twice")));
        }
        if ty == "histogram" && name.ends_with("_bucket") {
            let le = labels.iter().find(|(k, _)| k == "le").ok_or_else(|| at("a bucket without le".into()))?;
            let le = parse_value(&le.1).map_err(at)?;
            let rest: Vec<String> =
                sorted.iter().filter(|(k, _)| k != "le").map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            buckets.entry(format!("{family}{{{}}}", rest.join(","))).or_default().push((le, value));
        }
    }
    for (series, mut bs) in buckets {
        bs.sort_by(|a, b| a.0.total_cmp(&b.0));
        if bs.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!("buckets of {series} are not cumulative: {bs:?}"));
        }
        let inf = bs.last().filter(|b| b.0.is_infinite()).ok_or_else(|| format!("{series} has no +Inf bucket"))?;
        let (family, labels) = series.split_once('{').expect("built with a brace");
        let count_key = if labels == "}" { format!("{family}_count") } else { format!("{family}_count{{{labels}") };
        match samples.get(&count_key) {
            Some(c) if *c == inf.1 => {}
            other => return Err(format!("{series}: +Inf bucket {} but _count {other:?}", inf.1)),
        }
    }
    Ok(Exposition { samples, types })
}

fn scrape(demo: &Demo, node: u64) -> Exposition {
    let r = demo.curl(&[&format!("{}/metrics", demo.url(node))]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    check_exposition(&r.text()).unwrap_or_else(|e| panic!("node {node}'s /metrics is not valid exposition: {e}"))
}

#[test]
fn the_checker_rejects_broken_expositions() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n# TYPE h histogram\n\
                h_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    let e = check_exposition(good).unwrap();
    assert_eq!(e.sum("a_total", &[("x", "1")]), 3.0);
    assert_eq!(e.types["h"], "histogram");
    for (bad, why) in [
        ("a_total 3\n", "no TYPE"),
        ("# TYPE a_total counter\na_total 3\na_total 4\n", "a series twice"),
        ("# TYPE a_total counter\na_total three\n", "a value that is not a number"),
        ("# TYPE a_total counter\na_total -1\n", "a negative counter"),
        ("# TYPE a_total counter\na_total{x=\"1\" 3\n", "an unterminated label set"),
        ("# TYPE a_total counter\na_total{x=1} 3\n", "an unquoted label value"),
        ("# TYPE a_total counter\na_total{x=\"1\"}3\n", "no space before the value"),
        ("# TYPE a counter\n# TYPE a gauge\n", "TYPE twice"),
        ("# TYPE a_total counter\na_total 1\n# TYPE a_total counter\n", "TYPE after samples"),
        ("# TYPE h histogram\nh_bucket{le=\"0.1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", "buckets not cumulative"),
        ("# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n", "+Inf bucket != count"),
        ("# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_count 1\n", "no +Inf bucket"),
        ("# TYPE a_total counter\na_total 1", "no final newline"),
        ("# TYPE 1a counter\n", "a bad name"),
        ("# TYPE a_total counter\na_total{x=\"1\" y=\"2\"} 3\n", "labels without a comma"),
    ] {
        assert!(check_exposition(bad).is_err(), "the checker accepted {why}: {bad:?}");
    }
}

#[test]
fn metrics_are_valid_prometheus_text_and_move_under_load() {
    let demo = Demo::start(OFFSET, false);
    let before: Vec<Exposition> = (1..=3).map(|n| scrape(&demo, n)).collect();

    // 200 puts through the Rust client with the demo's client certificate,
    // and a few through HTTP.
    let certs = demo.client_certs();
    let endpoints: Vec<String> = (1..=3).map(|n| format!("127.0.0.1:{}", 7100 + OFFSET + n)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let tls = pactdb_client::ClientTls::load(&certs).unwrap();
        let opts = pactdb_client::ClientOptions::default().tls(tls);
        let client = pactdb_client::Client::connect_opts(&endpoints, opts).await.unwrap();
        for i in 0..200 {
            client.put(format!("load-{i}"), format!("value-{i}")).await.unwrap();
        }
    });
    for i in 0..5 {
        let r = demo.curl(&["-X", "PUT", "--data-binary", "v", &format!("{}/v1/kv/http-{i}", demo.url(1))]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let after: Vec<Exposition> = (1..=3).map(|n| scrape(&demo, n)).collect();

    let moved = |name: &str, with: &[(&str, &str)]| -> f64 {
        after.iter().map(|e| e.sum(name, with)).sum::<f64>() - before.iter().map(|e| e.sum(name, with)).sum::<f64>()
    };
    // Every put reached its group's leader (active groups: every member).
    let puts = moved("pactdb_client_requests_total", &[("op", "put")]);
    assert!(puts >= 205.0, "put requests moved by {puts}");
    let ok = moved("pactdb_client_responses_total", &[("op", "put"), ("result", "ok")]);
    assert!(ok >= 205.0, "put answers moved by {ok}");
    let timed = moved("pactdb_client_request_duration_seconds_count", &[("op", "put")]);
    assert!(timed >= 205.0, "put latencies recorded: {timed}");
    // Each put is one entry committed in its group, seen by every member.
    let commits = moved("pactdb_commits_total", &[]);
    assert!(commits >= 205.0, "commits moved by {commits}");
    for (n, (b, a)) in before.iter().zip(&after).enumerate() {
        let node = n + 1;
        for counter in ["pactdb_wal_bytes_written_total", "pactdb_wal_records_written_total"] {
            assert!(a.sum(counter, &[]) > b.sum(counter, &[]), "node {node}: {counter} did not move");
        }
        let fsyncs = a.sum("pactdb_wal_fsync_duration_seconds_count", &[])
            - b.sum("pactdb_wal_fsync_duration_seconds_count", &[]);
        assert!(fsyncs > 0.0, "node {node}: no fsync recorded");
        assert_eq!(a.types["pactdb_wal_fsync_duration_seconds"], "histogram");
        assert_eq!(a.types["pactdb_client_request_duration_seconds"], "histogram");
        assert!(
            a.sum("pactdb_http_requests_total", &[("route", "/metrics"), ("status", "200")])
                > b.sum("pactdb_http_requests_total", &[("route", "/metrics"), ("status", "200")]),
            "node {node}: the scrape was not counted"
        );
        // Gauges from the node's status, per group and role.
        assert_eq!(a.sum("pactdb_node_up", &[]), 1.0);
        for group in ["0", "1", "2"] {
            for gauge in [
                "pactdb_replica_commit_index",
                "pactdb_replica_epoch",
                "pactdb_prepared_transactions",
                "pactdb_locks_held",
                "pactdb_sessions",
            ] {
                assert!(a.has(gauge, &[("group", group)]), "node {node}: no {gauge} of group {group}");
            }
        }
        assert!(a.sum("pactdb_sessions", &[]) > 0.0, "node {node}: no session counted");
    }
    // Roles: one primary per passive group, sequencer and members in the active one.
    let primaries: f64 = after
        .iter()
        .map(|e| {
            e.samples.keys().filter(|k| k.contains("role=\"primary\"") && k.starts_with("pactdb_replica_epoch")).count()
                as f64
        })
        .sum();
    assert_eq!(primaries, 2.0, "two passive groups, one primary each");
    let http = moved("pactdb_http_requests_total", &[("route", "/v1/kv/{key}"), ("method", "PUT"), ("status", "200")]);
    assert_eq!(http, 5.0);
    // The commit index the gauges show grew by the load as well.
    let idx = |e: &[Exposition]| -> f64 { e.iter().map(|x| x.sum("pactdb_replica_commit_index", &[])).sum() };
    assert!(idx(&after) - idx(&before) >= 205.0);
}
