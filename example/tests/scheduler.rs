use profiled::profiled;
use scheduler_example::{score_node, Cluster, Pod};

// Heap profiles (`PROFILE=heap`) and allocation assertions read this.
#[global_allocator]
static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();

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

#[profiled]
#[test]
fn builds_a_cluster() {
    // With PROFILE=heap, the heap profile shows where building a cluster allocates: the
    // nodes' label vectors, and the label index it builds and throws away.
    let cluster = Cluster::build(2_000);
    assert_eq!(cluster.nodes.len(), 2_000);
}

#[test]
fn scoring_a_node_does_not_allocate() {
    let cluster = Cluster::build(10);
    let pod = Pod {
        cpu: 100,
        mem: 1 << 20,
        affinity: 7,
    };
    profiled::assert_allocations!(at_most = 0, || score_node(&cluster.nodes[0], &pod));
}
