//! `gantry bench schedule` reports every figure docs/benchmarks.md records, from the very
//! pass and plan the scheduler runs, and arrivals into a cluster with room all start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use gantry_testkit::gantry;

#[test]
fn bench_schedule_reports_passes_and_arrivals_as_json() {
    // No scheduler is needed: the bench runs the policies in the CLI's process, and a
    // GANTRY_SERVER no client command would take is not even read.
    let out = gantry(
        "https://nowhere",
        &[
            "bench",
            "schedule",
            "--nodes",
            "16",
            "--pending",
            "200",
            "--passes",
            "3",
            "-o",
            "json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["nodes"], 16);
    assert_eq!(report["pending"], 200);
    for key in [
        "pass_p50_ms",
        "pass_p99_ms",
        "pass_max_ms",
        "arrival_p50_ms",
        "arrival_p99_ms",
        "arrival_start_p50_ms",
        "arrival_full_pass_p50_ms",
    ] {
        let ms = report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {report}"));
        assert!(ms >= 0.0, "{key}: {ms}");
    }
    assert!(
        report["pass_p50_ms"].as_f64() <= report["pass_max_ms"].as_f64(),
        "{report}"
    );
    // At least 100 arrivals, most decided from the plan rather than by a pass.
    let arrivals = report["arrivals"].as_u64().unwrap();
    let by_pass = report["arrivals_needing_a_pass"].as_u64().unwrap();
    assert!(arrivals >= 100 && by_pass < arrivals / 2, "{report}");
}
