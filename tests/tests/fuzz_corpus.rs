//! Every fuzz target's corpus and regressions replayed through the function the target calls,
//! so CI catches a regression without cargo-fuzz: the seeds captured from real runs and every
//! input that once crashed (`CRATE/fuzz/corpus/TARGET`, `CRATE/fuzz/regressions/TARGET`).

use std::path::Path;

type Target = fn(&[u8]);

/// Runs every file of `crate_dir/fuzz/{corpus,regressions}/name` through `target`, and
/// asserts none panics and the corpus has at least three seeds.
fn replay(crate_dir: &str, name: &str, target: Target) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("a corpus file");
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(r.is_ok(), "{crate_dir}/{name}: {} panics", path.display());
            n += 1;
        }
    }
    assert!(n >= 3, "{crate_dir}/{name}: only {n} corpus files");
}

#[test]
fn the_sdks_parsers_replay_their_corpora() {
    for (name, target) in roam::fuzzing::TARGETS {
        replay("sdk", name, *target);
    }
}

#[test]
fn the_kernels_netlink_answers_replay_their_corpora() {
    for (name, target) in roam_link::netlink::fuzz::TARGETS {
        replay("link", name, *target);
    }
}

#[test]
fn roamds_ipc_frames_replay_their_corpus() {
    replay("ipc", "ipc_frames", roam_ipc::proto::fuzz_frames);
}

#[test]
fn the_probe_wire_replays_its_corpus() {
    replay("agent", "probe_packet", roam_agent::probe::wire::fuzz);
}
