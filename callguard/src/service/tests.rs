//! The service over an in-memory store and a fake kernel: what an operator's change does to the
//! store and to the kernel maps, also when the kernel refuses it. No root, no loaded program.

use super::*;
use crate::{
    api::control::{AddNets, DelNets, NetSpec},
    kernel::{
        datapath::NetMap,
        fake::{FakeDatapath, FakeKernel},
    },
    net,
};

fn service() -> (Service, FakeKernel) {
    let (kernel, datapath): (FakeKernel, FakeDatapath) = FakeKernel::new();
    let store = SqliteStore::memory().expect("store");
    let s = Service::with_parts(Options::default(), Config::default(), Box::new(store), Box::new(datapath))
        .expect("service");
    (s, kernel)
}

fn spec(cidr: &str, action: NetAction, comment: &str) -> NetSpec {
    NetSpec {
        cidr: cidr.into(),
        action,
        scope: net::Scope::Sip,
        profile: None,
        expires_at: None,
        comment: comment.into(),
    }
}

fn add(s: &mut Service, specs: &[NetSpec]) -> Result<api::Added> {
    s.add_nets(&AddNets { rules: specs.to_vec(), import: false })
}

/// (cidr, comment) of every stored rule, and the kernel's networks.
fn seen(s: &mut Service) -> (Vec<(String, String)>, Vec<String>) {
    let stored =
        s.store().nets().expect("nets").into_iter().map(|r| (r.cidr.to_string(), r.comment)).collect();
    let kernel = s.datapath().nets().keys().map(ToString::to_string).collect();
    (stored, kernel)
}

#[test]
fn a_change_reaches_store_and_kernel() {
    let (mut s, _k) = service();
    add(&mut s, &[spec("198.18.0.0/24", NetAction::Deny, "a"), spec("2001:db8::1", NetAction::Allow, "b")])
        .expect("added");
    let (stored, kernel) = seen(&mut s);
    assert_eq!(stored.len(), 2);
    assert_eq!(kernel, ["198.18.0.0/24", "2001:db8::1/128"]);
    s.del_nets(&DelNets { cidr: Some("198.18.0.0/24".into()), ..Default::default() }).expect("deleted");
    assert_eq!(seen(&mut s).1, ["2001:db8::1/128"]);
}

#[test]
fn a_full_kernel_map_refuses_the_change_and_stores_nothing() {
    let (mut s, k) = service();
    k.state().capacities.insert(NetMap::V4Lpm, 2);
    add(&mut s, &[spec("198.18.0.0/24", NetAction::Deny, ""), spec("198.18.1.0/24", NetAction::Deny, "")])
        .expect("two fit");
    // A batch that would overflow is refused whole, before the store is touched.
    let err =
        add(&mut s, &[spec("198.18.2.0/24", NetAction::Deny, ""), spec("198.18.9.9", NetAction::Deny, "")])
            .expect_err("a third prefix does not fit");
    assert!(
        matches!(err, ServiceError::Kernel(KernelError::Full { map: NetMap::V4Lpm, capacity: 2, needed: 3 })),
        "{err:?}"
    );
    assert!(err.to_string().contains(NetMap::V4Lpm.name()), "the error names the map: {err}");
    let (stored, kernel) = seen(&mut s);
    assert_eq!(stored.len(), 2, "nothing of the refused batch is stored: {stored:?}");
    assert_eq!(kernel.len(), 2);
    // Changing a rule that is already in the kernel needs no room, and an address goes to the
    // exact map, which has room.
    add(
        &mut s,
        &[spec("198.18.0.0/24", NetAction::Deny, "changed"), spec("198.18.9.9", NetAction::Deny, "")],
    )
    .expect("an update and an address fit");
    // An allow rule on a network already denied shares its kernel entry: it fits too.
    add(&mut s, &[spec("198.18.1.0/24", NetAction::Allow, "")]).expect("same entry");
}

#[test]
fn a_kernel_failure_after_the_store_write_leaves_both_as_they_were() {
    let (mut s, k) = service();
    add(&mut s, &[spec("198.18.0.0/24", NetAction::Deny, "before")]).expect("added");
    let before = seen(&mut s);
    let id = s.store().nets().expect("nets")[0].id;

    // A new rule: its row is removed again.
    k.state().fail_writes = 1;
    let err = add(&mut s, &[spec("198.18.5.0/24", NetAction::Deny, "new")]).expect_err("kernel refuses");
    assert!(matches!(err, ServiceError::Kernel(KernelError::Failed(_))), "{err:?}");
    assert_eq!(seen(&mut s), before);

    // An update of a stored rule that changes its kernel entry (the scope): the old row comes
    // back, with its id.
    k.state().fail_writes = 1;
    let wider = NetSpec { scope: net::Scope::All, ..spec("198.18.0.0/24", NetAction::Deny, "after") };
    add(&mut s, &[wider]).expect_err("kernel refuses");
    assert_eq!(seen(&mut s), before);
    assert_eq!(s.store().nets().expect("nets")[0].id, id, "the rule keeps its id");

    // A delete: the rule is stored and enforced again.
    k.state().fail_writes = 1;
    s.del_nets(&DelNets { cidr: Some("198.18.0.0/24".into()), ..Default::default() }).expect_err("refused");
    assert_eq!(seen(&mut s), before);

    // And the next change goes through as usual.
    add(&mut s, &[spec("198.18.5.0/24", NetAction::Deny, "new")]).expect("added");
    assert_eq!(seen(&mut s).1.len(), 2);
}

#[test]
fn bad_input_names_its_field() {
    let (mut s, _k) = service();
    let err = add(
        &mut s,
        &[spec("198.18.0.0/24", NetAction::Deny, ""), spec("198.18.0.1/24", NetAction::Deny, "")],
    )
    .expect_err("host bits");
    assert!(matches!(&err, ServiceError::Invalid { field, .. } if field == "rules[1].cidr"), "{err:?}");
    let err =
        s.del_nets(&DelNets { cidr: Some("198.18.7.0/24".into()), ..Default::default() }).expect_err("none");
    assert!(matches!(&err, ServiceError::NotFound { field, .. } if field == "cidr"), "{err:?}");
    assert!(seen(&mut s).0.is_empty());
}

fn blocklist(name: &str) -> crate::feeds::Feed {
    Config::parse(&format!(
        "[[feeds]]\nname = \"{name}\"\nurl = \"http://192.0.2.1/list\"\nformat = \"plain\"\n"
    ))
    .expect("a feed")
    .feeds
    .remove(0)
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    let mut v: Vec<IpNet> = list.iter().map(|n| n.parse().expect("net")).collect();
    v.sort();
    v
}

/// (cidr, origin) of every stored rule, sorted.
fn origins(s: &mut Service) -> Vec<(String, String)> {
    let mut v: Vec<_> = s
        .store()
        .nets()
        .expect("nets")
        .into_iter()
        .map(|r| (r.cidr.to_string(), r.origin.as_str().to_owned()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_feed_refresh_replaces_its_own_rules_and_touches_no_other() {
    let (mut s, k) = service();
    let feed = blocklist("drop");
    add(&mut s, &[spec("198.18.2.0/24", NetAction::Deny, "the operator's")]).expect("manual rule");
    let a = s
        .replace_list(
            &lists::List::feed(&feed),
            &nets(&["198.18.1.0/24", "198.18.2.0/24", "198.18.3.0/24"]),
            &mut |_, _| {},
        )
        .expect("first load");
    assert_eq!((a.rules, a.added, a.removed, a.held_by_others), (2, 2, 0, 1));
    assert_eq!(
        origins(&mut s),
        [("198.18.1.0/24", "feed"), ("198.18.2.0/24", "manual"), ("198.18.3.0/24", "feed")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let first_id =
        s.store().nets().expect("nets").iter().find(|r| r.cidr.to_string() == "198.18.1.0/24").unwrap().id;

    // The next document drops 198.18.3.0/24 and brings 198.18.4.0/24: the kept rule keeps its id,
    // the operator's rule stays the operator's.
    let a = s
        .replace_list(&lists::List::feed(&feed), &nets(&["198.18.1.0/24", "198.18.4.0/24"]), &mut |_, _| {})
        .expect("refresh");
    assert_eq!((a.rules, a.added, a.removed, a.held_by_others), (2, 1, 1, 0));
    let (stored, kernel) = seen(&mut s);
    assert_eq!(kernel, ["198.18.1.0/24", "198.18.2.0/24", "198.18.4.0/24"]);
    assert_eq!(stored.iter().find(|r| r.0 == "198.18.2.0/24").map(|r| r.1.as_str()), Some("the operator's"));
    let kept =
        s.store().nets().expect("nets").into_iter().find(|r| r.cidr.to_string() == "198.18.1.0/24").unwrap();
    assert_eq!((kept.id, kept.list.as_deref()), (first_id, Some("drop")));

    // A refresh the kernel refuses midway leaves store and maps as they were.
    let before = seen(&mut s);
    k.state().fail_writes = 1;
    s.replace_list(&lists::List::feed(&feed), &nets(&["198.18.1.0/24", "198.18.5.0/24"]), &mut |_, _| {})
        .expect_err("refused");
    assert_eq!(seen(&mut s), before);
    // So does one the maps have no room for, before anything is stored.
    k.state().capacities.insert(NetMap::V4Lpm, 3);
    let err = s
        .replace_list(
            &lists::List::feed(&feed),
            &nets(&["198.18.1.0/24", "198.18.4.0/24", "198.18.6.0/24"]),
            &mut |_, _| {},
        )
        .expect_err("no room");
    assert!(matches!(err, ServiceError::Kernel(KernelError::Full { .. })), "{err:?}");
    assert_eq!(seen(&mut s), before);

    // An operator who adds the feed's network by hand takes it over: the feed leaves it alone.
    add(&mut s, &[spec("198.18.4.0/24", NetAction::Deny, "mine now")]).expect("manual");
    let a = s
        .replace_list(&lists::List::feed(&feed), &nets(&["198.18.1.0/24", "198.18.4.0/24"]), &mut |_, _| {})
        .expect("refresh");
    assert_eq!((a.rules, a.held_by_others), (1, 1));
    assert_eq!(s.list_rules("drop"), 1);

    // A feed's rule is the feed's: `net del CIDR` refuses it, `net del --all` leaves it.
    let err = s.del_nets(&DelNets { cidr: Some("198.18.1.0/24".into()), ..Default::default() }).unwrap_err();
    assert!(err.to_string().contains("belongs to feed drop"), "{err}");
    s.del_nets(&DelNets { all: true, ..Default::default() }).expect("all");
    assert_eq!(seen(&mut s).1, ["198.18.1.0/24"]);
}
