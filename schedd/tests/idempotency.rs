//! A submit retried with the same idempotency key creates one job, over the real API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use gantry_proto as pb;
use gantry_testkit::Schedd;

fn request(key: &str) -> pb::SubmitRequest {
    pb::SubmitRequest {
        caller: Some(pb::Caller {
            user: "ann".into(),
            uid: 1000,
            gid: 1000,
        }),
        spec: Some(pb::JobSpec {
            name: "retry".into(),
            account: "default".into(),
            num_nodes: 1,
            cpus_per_node: 1,
            mem_per_node_mib: 256,
            work_dir: "/tmp".into(),
            program: Some(pb::Program {
                kind: Some(pb::program::Kind::Command(pb::CommandLine {
                    argv: vec!["true".into()],
                })),
            }),
            ..Default::default()
        }),
        idempotency_key: key.into(),
    }
}

#[tokio::test]
async fn a_retried_submit_returns_the_first_job() {
    let dir = tempfile::tempdir().unwrap();
    let schedd = Schedd::start(&dir.path().join("schedd"), &[]);
    let mut client = pb::scheduler_client::SchedulerClient::connect(schedd.url.clone())
        .await
        .unwrap();
    let first = client
        .submit(request("key-1"))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let retry = client
        .submit(request("key-1"))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    assert_eq!(first, retry, "the retry must not create a second job");
    let other = client
        .submit(request("key-2"))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    assert_eq!(other, first + 1);
    let unkeyed = client
        .submit(request(""))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let again = client
        .submit(request(""))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    assert_ne!(unkeyed, again, "without a key every submit is a new job");
    let jobs = client
        .list_jobs(pb::ListJobsRequest {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.into_inner().jobs.len(), 4);
}
