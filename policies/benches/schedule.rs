//! `cargo bench -p gantry-policies`: one full scheduling pass, and one arrival decided from
//! a pass's plan, on synthetic clusters (see `gantry_policies::synthetic`). The 10,000-node
//! figures of docs/benchmarks.md come from `gantry bench schedule`, which builds the same
//! cluster; criterion's sizes are smaller so a run takes minutes, not hours.

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use gantry_policies::synthetic::{Lcg, arrival, full_cluster, with_room};
use gantry_policies::{Plan, schedule};

const SIZES: [(u32, u32); 2] = [(1_000, 10_000), (10_000, 100_000)];

fn full_pass(c: &mut Criterion) {
    let mut group = c.benchmark_group("full_pass");
    group.sample_size(10);
    for (nodes, pending) in SIZES {
        let view = full_cluster(nodes, 8, pending);
        let id = BenchmarkId::from_parameter(format!("{nodes}x8_{pending}_pending"));
        group.bench_function(id, |b| b.iter(|| schedule(&view)));
    }
    group.finish();
}

fn arrivals(c: &mut Criterion) {
    let mut group = c.benchmark_group("arrival");
    for (nodes, pending) in SIZES {
        let full = full_cluster(nodes, 8, pending);
        let steady = full.with_starts(&schedule(&full));
        for (name, view) in [
            ("steady", steady.clone()),
            ("with_room", with_room(&steady)),
        ] {
            let plan = Plan::new(view.clone());
            let job = arrival(&view, 0, &mut Lcg(7));
            let id = BenchmarkId::new(name, format!("{nodes}x8_{pending}_pending"));
            // Each decision on a fresh copy of the plan; neither the copy nor its drop (the
            // plan is returned) is timed.
            group.bench_function(id, |b| {
                b.iter_batched(
                    || (plan.clone(), job.clone()),
                    |(mut plan, job)| {
                        let decided = plan.arrive(job, view.now_ms);
                        (plan, decided)
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, full_pass, arrivals);
criterion_main!(benches);
