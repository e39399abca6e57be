//! Fragmentation-aware node choice, in the spirit of fragmentation-gradient descent (Weng et
//! al., ATC '23) for whole GPUs: the free GPUs of a node are fragmented for a job size that no
//! longer fits there. Weighting sizes by how many jobs want them — those queued, and those
//! running, which stand for the sizes seen recently — a job goes where it grows fragmentation
//! the least: usually the fullest node that holds it, keeping whole nodes whole for the larger
//! jobs.

use std::collections::BTreeMap;

use gantry_model::Shape;

use crate::view::{ClusterView, PendingJob};

/// How many jobs want each number of GPUs per node.
#[derive(Debug, Default, Clone)]
pub(crate) struct Demand(BTreeMap<u32, u64>);

impl Demand {
    /// The sizes of the queued jobs (their main requests) and of the running ones. A job
    /// starting moves from one to the other, so starts leave the demand as it was.
    pub(crate) fn of(view: &ClusterView) -> Demand {
        let mut demand = Demand::default();
        for job in &view.pending {
            demand.add(job);
        }
        for job in &view.running {
            if let Some(part) = job.parts.first() {
                demand.count(part.res.gpus);
            }
        }
        demand
    }

    /// Counts one more waiting job.
    pub(crate) fn add(&mut self, job: &PendingJob) {
        if let Some(shape) = job.shapes.first() {
            self.count(shape.per_node.gpus);
        }
    }

    /// A waiting job starts in `shape`: it now counts as running in that size, as the next
    /// pass will count it (it differs from its main request when it starts as an alternative).
    pub(crate) fn started(&mut self, job: &PendingJob, shape: &Shape) {
        if let Some(main) = job.shapes.first()
            && main.per_node.gpus != shape.per_node.gpus
        {
            self.uncount(main.per_node.gpus);
            self.count(shape.per_node.gpus);
        }
    }

    fn count(&mut self, gpus_per_node: u32) {
        if gpus_per_node > 0 {
            *self.0.entry(gpus_per_node).or_default() += 1;
        }
    }

    fn uncount(&mut self, gpus_per_node: u32) {
        if let Some(jobs) = self.0.get_mut(&gpus_per_node) {
            *jobs -= 1;
            if *jobs == 0 {
                self.0.remove(&gpus_per_node);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Expected fragmented GPUs of a node with `free` GPUs free: for each size that does not
    /// fit, all of them, weighted by the jobs that want that size.
    fn fragmented(&self, free: u32) -> u64 {
        self.0
            .iter()
            .filter(|(size, _)| **size > free)
            .map(|(_, jobs)| jobs * u64::from(free))
            .sum()
    }

    /// How much taking `gpus` of a node's `free` GPUs changes its fragmentation: the lower,
    /// the better the fit.
    pub(crate) fn growth(&self, free: u32, gpus: u32) -> i128 {
        let after = self.fragmented(free.saturating_sub(gpus));
        i128::from(after) - i128::from(self.fragmented(free))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_four_gpu_job_fills_a_half_free_node_rather_than_break_a_whole_one() {
        let demand = Demand(BTreeMap::from([(4, 1), (8, 1)]));
        // On a node with 4 free it closes the gap for the 8-GPU job: -4.
        assert_eq!(demand.growth(4, 4), -4);
        // On a whole node it leaves 4 that the 8-GPU job cannot use: +4.
        assert_eq!(demand.growth(8, 4), 4);
        assert!(Demand::default().is_empty());
    }
}
