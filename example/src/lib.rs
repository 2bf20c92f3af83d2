//! A toy scheduler: places pods on the node that scores best.

/// A machine with free capacity.
#[derive(Clone, Debug)]
pub struct Node {
    pub cpu_free: u64,
    pub mem_free: u64,
    pub labels: Vec<u64>,
}

/// A workload to place.
#[derive(Clone, Debug)]
pub struct Pod {
    pub cpu: u64,
    pub mem: u64,
    pub affinity: u64,
}

/// Nodes plus where each pod went.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub placements: Vec<usize>,
}

impl Cluster {
    /// Builds a cluster of `nodes` nodes with pseudo-random capacity and labels: the
    /// expensive setup that tests keep out of their profiles.
    pub fn build(nodes: usize) -> Cluster {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let nodes = (0..nodes)
            .map(|_| Node {
                cpu_free: 64_000 + next() % 64_000,
                mem_free: 1 << 38,
                labels: (0..256).map(|_| next() % 1024).collect(),
            })
            .collect::<Vec<_>>();
        // Setup that costs real CPU: index every label (and throw the index away).
        let mut index = std::collections::BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for l in &n.labels {
                index.entry(*l).or_insert_with(Vec::new).push(i);
            }
        }
        std::hint::black_box(index);
        Cluster {
            nodes,
            placements: Vec::new(),
        }
    }

    /// Places `pods` pods, each on its best-scoring node.
    pub fn schedule(&mut self, pods: usize) {
        for p in 0..pods {
            let pod = Pod {
                cpu: 100 + (p as u64 % 7) * 10,
                mem: 1 << 20,
                affinity: p as u64 % 1024,
            };
            let best = (0..self.nodes.len())
                .max_by_key(|&i| score_node(&self.nodes[i], &pod))
                .expect("cluster has nodes");
            let node = &mut self.nodes[best];
            node.cpu_free -= pod.cpu.min(node.cpu_free);
            node.mem_free -= pod.mem.min(node.mem_free);
            self.placements.push(best);
        }
    }
}

/// How well `pod` fits `node`: free capacity plus label affinity.
#[inline(never)]
pub fn score_node(node: &Node, pod: &Pod) -> u64 {
    let affinity = node.labels.iter().filter(|&&l| l == pod.affinity).count() as u64;
    let fit = node.cpu_free.saturating_sub(pod.cpu) / 64
        + node.mem_free.saturating_sub(pod.mem) / (1 << 30);
    fit + affinity * 1000
}
