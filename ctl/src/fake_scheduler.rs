//! An in-process stand-in for the scheduler's client API on 127.0.0.1, so the CLI's
//! connection handling and polling are tested over real gRPC without the real daemon.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use gantry_proto as pb;
use pb::scheduler_server::{Scheduler, SchedulerServer};
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

#[derive(Default)]
pub struct Fake {
    /// Answer every call with `Unavailable`, as a follower without a leader would.
    pub unavailable: bool,
    /// Answer every call with `Unimplemented`, as an HTTP server that is not Gantry's does.
    pub unimplemented: bool,
    /// What GetJob answers for each job, one entry per call; the last one repeats.
    pub jobs: Mutex<BTreeMap<u64, VecDeque<pb::Job>>>,
    pub submits: Mutex<Vec<pb::SubmitRequest>>,
    pub calls: AtomicUsize,
}

impl Fake {
    pub fn with_jobs(jobs: &[(u64, &[pb::JobState])]) -> Fake {
        let jobs = jobs
            .iter()
            .map(|(id, states)| {
                let answers = states
                    .iter()
                    .map(|s| pb::Job {
                        id: *id,
                        state: *s as i32,
                        exit_code: matches!(s, pb::JobState::Failed).then_some(1),
                        ..Default::default()
                    })
                    .collect();
                (*id, answers)
            })
            .collect();
        Fake {
            jobs: Mutex::new(jobs),
            ..Default::default()
        }
    }

    fn enter(&self) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.unavailable {
            Err(Status::unavailable("not the leader; no leader elected yet"))
        } else if self.unimplemented {
            Err(Status::unimplemented("HTTP status code 404"))
        } else {
            Ok(())
        }
    }

    fn job_state(&self, id: u64) -> Option<i32> {
        let jobs = self.jobs.lock().ok()?;
        jobs.get(&id)?.front().map(|j| j.state)
    }
}

#[tonic::async_trait]
impl Scheduler for Fake {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        self.enter()?;
        let mut submits = self
            .submits
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        submits.push(request.into_inner());
        Ok(Response::new(pb::SubmitResponse {
            job_id: 41 + submits.len() as u64,
        }))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        self.enter()?;
        let mut response = pb::CancelResponse::default();
        for id in request.into_inner().job_ids {
            match self
                .job_state(id)
                .and_then(|s| pb::JobState::try_from(s).ok())
            {
                None => return Err(Status::not_found(format!("job {id} does not exist"))),
                Some(pb::JobState::Pending) => response.cancelled.push(id),
                Some(pb::JobState::Running) => response.signalled.push(id),
                Some(_) => {}
            }
        }
        Ok(Response::new(response))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        self.enter()?;
        let id = request.into_inner().job_id;
        let mut jobs = self.jobs.lock().map_err(|_| Status::internal("poisoned"))?;
        let answers = jobs
            .get_mut(&id)
            .ok_or_else(|| Status::not_found(format!("job {id} does not exist")))?;
        let job = if answers.len() > 1 {
            answers.pop_front()
        } else {
            answers.front().cloned()
        };
        job.map(Response::new)
            .ok_or_else(|| Status::internal("no answer scripted"))
    }

    async fn list_jobs(
        &self,
        _request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ListJobsResponse::default()))
    }

    async fn list_nodes(
        &self,
        _request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ListNodesResponse::default()))
    }

    async fn drain(
        &self,
        _request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::DrainResponse {}))
    }

    async fn resume(
        &self,
        _request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ResumeResponse {}))
    }

    async fn replace_node(
        &self,
        _request: Request<pb::ReplaceNodeRequest>,
    ) -> Result<Response<pb::ReplaceNodeResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ReplaceNodeResponse {}))
    }

    async fn replicas(
        &self,
        _request: Request<pb::ReplicasRequest>,
    ) -> Result<Response<pb::ReplicasResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ReplicasResponse::default()))
    }

    async fn add_replica(
        &self,
        _request: Request<pb::AddReplicaRequest>,
    ) -> Result<Response<pb::ReplicasResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ReplicasResponse::default()))
    }

    async fn remove_replica(
        &self,
        _request: Request<pb::RemoveReplicaRequest>,
    ) -> Result<Response<pb::ReplicasResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ReplicasResponse::default()))
    }

    async fn get_config(
        &self,
        _request: Request<pb::GetConfigRequest>,
    ) -> Result<Response<pb::ConfigResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ConfigResponse::default()))
    }

    async fn set_config(
        &self,
        _request: Request<pb::SetConfigRequest>,
    ) -> Result<Response<pb::ConfigResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ConfigResponse::default()))
    }

    async fn list_accounts(
        &self,
        _request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::AccountsResponse::default()))
    }

    async fn add_account(
        &self,
        _request: Request<pb::AddAccountRequest>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::AccountsResponse::default()))
    }

    async fn add_account_users(
        &self,
        _request: Request<pb::AddAccountUsersRequest>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::AccountsResponse::default()))
    }

    async fn set_account(
        &self,
        _request: Request<pb::SetAccountRequest>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::AccountsResponse::default()))
    }

    async fn remove_account(
        &self,
        _request: Request<pb::RemoveAccountRequest>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::AccountsResponse::default()))
    }

    async fn remove_account_users(
        &self,
        _request: Request<pb::RemoveAccountUsersRequest>,
    ) -> Result<Response<pb::AccountsResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::AccountsResponse::default()))
    }

    async fn checkpoint_done(
        &self,
        _request: Request<pb::CheckpointDoneRequest>,
    ) -> Result<Response<pb::CheckpointDoneResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::CheckpointDoneResponse {}))
    }

    async fn control(
        &self,
        _request: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::ControlResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ControlResponse {}))
    }

    async fn history(
        &self,
        _request: Request<pb::AccountingRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::HistoryResponse::default()))
    }

    async fn usage(
        &self,
        _request: Request<pb::AccountingRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::UsageResponse::default()))
    }

    async fn create_reservation(
        &self,
        _request: Request<pb::CreateReservationRequest>,
    ) -> Result<Response<pb::ReservationsResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ReservationsResponse::default()))
    }

    async fn update_reservation(
        &self,
        _request: Request<pb::CreateReservationRequest>,
    ) -> Result<Response<pb::ReservationsResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ReservationsResponse::default()))
    }

    async fn delete_reservation(
        &self,
        _request: Request<pb::DeleteReservationRequest>,
    ) -> Result<Response<pb::ReservationsResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ReservationsResponse::default()))
    }

    async fn list_reservations(
        &self,
        _request: Request<pb::ListReservationsRequest>,
    ) -> Result<Response<pb::ReservationsResponse>, Status> {
        self.enter()?;
        Ok(Response::new(pb::ReservationsResponse::default()))
    }
}

/// A fake serving on an OS-picked port; stopped when dropped.
pub struct Serving {
    pub address: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

pub fn serve(fake: std::sync::Arc<Fake>) -> Serving {
    let incoming = TcpIncoming::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let address = format!("http://{}", incoming.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = Server::builder()
            .add_service(SchedulerServer::from_arc(fake))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    Serving {
        address,
        stop: Some(stop),
        task,
    }
}
