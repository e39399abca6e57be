//! Builds the policies' input from the state.

use gantry_policies::{ClusterView, Held, NodeView, PendingJob, RunningJob};

use crate::machine::StateMachine;

impl StateMachine {
    /// The snapshot the policies decide on: every node, and the pending jobs in priority
    /// order (submit order, for placement v0).
    pub fn cluster_view(&self, now_ms: u64) -> ClusterView {
        let pending = self
            .pending
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .map(|j| PendingJob {
                id: j.id,
                shapes: j.spec.shapes(),
            })
            .collect();
        let running = self
            .active
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .map(|j| RunningJob {
                id: j.id,
                ends_at_ms: j
                    .spec
                    .time_limit_for(j.shape)
                    .map(|limit| j.start_time_ms.unwrap_or(now_ms).saturating_add(limit)),
                parts: j
                    .parts
                    .iter()
                    .filter(|p| p.exit.is_none())
                    .map(|p| Held {
                        node: p.node.clone(),
                        res: p.resources(),
                        gpus: p.gpus.clone(),
                    })
                    .collect(),
            })
            .collect();
        ClusterView {
            now_ms,
            nodes: self.node_views(),
            pending,
            running,
        }
    }

    /// Every node as the policies see it. Cheap next to the queue: a submit checks its
    /// feasibility against these alone.
    pub fn node_views(&self) -> Vec<NodeView> {
        self.nodes
            .values()
            .map(|n| {
                let unavailable_reason = n.unavailable_reason();
                NodeView {
                    name: n.name.clone(),
                    schedulable: unavailable_reason.is_none(),
                    unavailable_reason,
                    gpus: n.inventory.gpus.clone(),
                    capacity: n.inventory.capacity(),
                    free: n.free(),
                    free_gpus: n.free_gpus(),
                }
            })
            .collect()
    }
}
