use profiled::profiled;
use scheduler_example::Cluster;

#[profiled]
#[test]
fn schedules_1000_pods() {
    let mut cluster = Cluster::build(1_000); // expensive setup
    profiled::reset(); // like Go's b.ResetTimer(): nothing before this is in the profile
    cluster.schedule(1_000);
    assert_eq!(cluster.placements.len(), 1_000);
}

#[profiled]
#[test]
fn schedules_in_waves() {
    let mut cluster = Cluster::build(500);
    for _ in 0..4 {
        cluster.schedule(300);
        // Checking the invariants is not what this test measures.
        profiled::unprofiled(|| {
            let again = Cluster::build(500);
            assert_eq!(again.nodes.len(), cluster.nodes.len());
        });
    }
    assert_eq!(cluster.placements.len(), 1_200);
}

#[profiled]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_on_runtime_workers() {
    let waves: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async {
                let mut cluster = Cluster::build(500);
                cluster.schedule(600);
                cluster.placements.len()
            })
        })
        .collect();
    for w in waves {
        assert_eq!(w.await.unwrap(), 600);
    }
}
