//! Kernel verdict tests: the real XDP program, loaded in this kernel, run on crafted frames
//! through BPF_PROG_TEST_RUN. Each test asserts the verdict and the counters a user would read.

use callguard::rules::{Kind, Scope};
use callguard_common::{Action, Reason};
use callguard_tests::{
    TestKernel,
    frame::{Frame, TPID_8021AD, TPID_8021Q},
    rule,
};

#[test]
fn blocked_prefix_drops_on_guarded_port_and_counts() {
    let mut k = TestKernel::new();
    k.set_rules(&[rule(7, "198.18.66.0/24", Kind::Deny, Scope::Sip)]);
    let f = Frame::udp("198.18.66.9", 5060).build();
    assert_eq!(k.run(&f), Action::Drop);
    assert_eq!(k.run(&Frame::udp("198.18.67.9", 5060).build()), Action::Pass);
    let c = k.counter(Action::Drop, Reason::Denied);
    assert_eq!((c.packets, c.bytes), (1, f.len() as u64));
    assert_eq!(k.rule_counter(7).packets, 1);
    assert_eq!(k.counter(Action::Pass, Reason::Clean).packets, 1);
}
