//! Builds the policies' input from the state.

use gantry_model::JobId;
use gantry_policies::{ClusterView, Held, NodeView, PendingJob, ReservationView, RunningJob};

use crate::machine::StateMachine;

impl StateMachine {
    /// The snapshot the policies decide on: every node, and the pending jobs in priority
    /// order (submit order, for placement v0).
    pub fn cluster_view(&self, now_ms: u64) -> ClusterView {
        let pending = self.pending_after(0);
        let running = self
            .active
            .iter()
            .filter_map(|id| self.jobs.get(id))
            .map(|j| RunningJob {
                id: j.id,
                account: j.spec.account.clone(),
                start_ms: j.start_time_ms.unwrap_or(now_ms),
                stopping: j.stopping(),
                // A cancel while it stops ends the move: it will not start again.
                moving_to: j
                    .moved_to
                    .clone()
                    .filter(|_| j.stopping() && !j.cancel_requested),
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
                qos: j.spec.qos.clone(),
                checkpointed_ms: j.checkpointed_this_run(),
                movable: j
                    .spec
                    .checkpoint
                    .as_ref()
                    .and_then(|_| j.spec.shape(j.shape)),
                deadline_ms: j.spec.deadline_ms,
                preemptions: j.preemptions(),
            })
            .collect();
        ClusterView {
            now_ms,
            nodes: self.node_views(),
            pending,
            running,
            config: self.config.clone(),
            usage: self.usage.charges(),
            accounts: self.accounts.views(),
            // Not state: the scheduler's configuration adds it.
            topology: Default::default(),
            preempted_last_hour: self.preemptions.last_hour(now_ms),
            reservations: self
                .reservations(now_ms)
                .map(|r| ReservationView {
                    name: r.name.clone(),
                    start_ms: r.start_ms,
                    end_ms: r.end_ms,
                    nodes: r.nodes.clone(),
                    gpus: r.gpus.clone(),
                })
                .collect(),
        }
    }

    /// The pending jobs with ids above `id`, in id order, as the policies see them: the jobs
    /// that arrived after a plan that knew the jobs up to `id`. Held jobs are not there.
    pub fn pending_after(&self, id: JobId) -> Vec<PendingJob> {
        self.pending
            .range(id.saturating_add(1)..)
            .filter_map(|id| self.jobs.get(id))
            .filter(|j| j.held_by.is_none())
            .map(|j| PendingJob {
                id: j.id,
                shapes: j.spec.shapes(),
                submit_ms: j.submit_time_ms,
                account: j.spec.account.clone(),
                qos: j.spec.qos.clone(),
                reservation: j.spec.reservation.clone(),
                moved: j.moved_to.is_some(),
                claimant: j.claim.clone(),
                preemptions: j.preemptions(),
                deadline_ms: j.spec.deadline_ms,
                waiting_on: j
                    .spec
                    .dependencies
                    .iter()
                    .filter(|d| {
                        self.jobs
                            .get(&d.job)
                            .is_some_and(|on| !on.state.is_terminal())
                    })
                    .copied()
                    .collect(),
            })
            .collect()
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
                    gpus: n.usable_gpus(),
                    capacity: n.capacity(),
                    free: n.free(),
                    free_gpus: n.free_gpus(),
                    pool: n.inventory.pool.clone(),
                    labels: n.inventory.labels.clone(),
                }
            })
            .collect()
    }
}
