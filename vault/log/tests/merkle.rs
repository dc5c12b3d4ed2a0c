//! Proof vectors in the style of transparency-dev: the RFC 6962 reference tree, every proof of
//! every small tree against an independent recursive reference, and every corruption refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use coffre_log::merkle::{Hash, Tree, empty_root, leaf_hash, node_hash, verify_consistency, verify_inclusion};
use coffre_log::proof::Proof;
use proptest::prelude::*;

/// The Certificate Transparency reference leaves (RFC 6962 test data).
const CT_LEAVES: [&str; 8] =
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
/// Their roots for sizes 0..=8, as published with RFC 6962 implementations.
const CT_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn ct_tree() -> Tree {
    Tree::from_leaves(CT_LEAVES.iter().map(|l| leaf_hash(&hex::decode(l).unwrap())))
}

/// MTH by the RFC's recursive definition, independent of `Tree`'s stored levels.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(format!("entry {i}").as_bytes())).collect()
}

#[test]
fn reference_roots() {
    let t = ct_tree();
    for (size, root) in CT_ROOTS.iter().enumerate() {
        assert_eq!(hex::encode(t.root_at(size as u64).unwrap()), *root, "size {size}");
    }
}

#[test]
fn reference_proofs() {
    let t = ct_tree();
    let root = h(CT_ROOTS[8]);
    let cases: [(u64, [&str; 3]); 2] = [
        (
            0,
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (index, want) in cases {
        let proof = t.inclusion_proof(index, 8).unwrap();
        assert_eq!(proof, want.map(h).to_vec(), "inclusion of {index}");
        verify_inclusion(&t.leaf(index).unwrap(), index, 8, &proof, &root).unwrap();
    }
    let consistency = t.consistency_proof(2, 8).unwrap();
    assert_eq!(
        consistency,
        vec![
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ]
    );
    verify_consistency(2, 8, &h(CT_ROOTS[2]), &root, &consistency).unwrap();
}

fn flipped(proof: &[Hash], i: usize, bit: u8) -> Vec<Hash> {
    let mut p = proof.to_vec();
    p[i][usize::from(bit) % 32] ^= 1 << (bit % 8);
    p
}

/// Every proof of every tree up to 70 leaves verifies; every corruption fails.
#[test]
fn inclusion_all_sizes_and_corruptions() {
    let all = leaves(70);
    let tree = Tree::from_leaves(all.iter().copied());
    for n in 1..=70u64 {
        let root = mth(&all[..n as usize]);
        assert_eq!(tree.root_at(n).unwrap(), root, "root of {n}");
        for i in 0..n {
            let leaf = all[i as usize];
            let proof = tree.inclusion_proof(i, n).unwrap();
            verify_inclusion(&leaf, i, n, &proof, &root).unwrap_or_else(|e| panic!("{i}/{n}: {e}"));
            let bad =
                |p: &[Hash], i: u64, n: u64, leaf: &Hash, root: &Hash| verify_inclusion(leaf, i, n, p, root).is_err();
            for k in 0..proof.len() {
                assert!(bad(&flipped(&proof, k, (k * 7) as u8), i, n, &leaf, &root), "flip {k} {i}/{n}");
            }
            if !proof.is_empty() {
                assert!(bad(&proof[..proof.len() - 1], i, n, &leaf, &root));
                let mut swapped = proof.clone();
                swapped.reverse();
                if swapped != proof {
                    assert!(bad(&swapped, i, n, &leaf, &root));
                }
            }
            let mut longer = proof.clone();
            longer.push(root);
            assert!(bad(&longer, i, n, &leaf, &root), "extended {i}/{n}");
            assert!(bad(&proof, i + 1, n, &leaf, &root), "index+1 {i}/{n}");
            if i > 0 {
                assert!(bad(&proof, i - 1, n, &leaf, &root), "index-1 {i}/{n}");
            }
            // A proof does not always fix the size alone (the signed root does); a tree of another
            // height never verifies.
            assert!(bad(&proof, i, n * 2, &leaf, &root), "size*2 {i}/{n}");
            if i < n / 2 {
                assert!(bad(&proof, i, n / 2, &leaf, &root), "size/2 {i}/{n}");
            }
            assert!(bad(&proof, i, n, &leaf, &flipped(&[root], 0, 3)[0]), "root {i}/{n}");
            assert!(bad(&proof, i, n, &flipped(&[leaf], 0, 5)[0], &root), "leaf {i}/{n}");
        }
        assert!(tree.inclusion_proof(n, n).is_err());
    }
}

#[test]
fn consistency_all_sizes_and_corruptions() {
    let all = leaves(40);
    let tree = Tree::from_leaves(all.iter().copied());
    for n in 1..=40u64 {
        let new_root = mth(&all[..n as usize]);
        for m in 0..=n {
            let old_root = mth(&all[..m as usize]);
            let proof = tree.consistency_proof(m, n).unwrap();
            verify_consistency(m, n, &old_root, &new_root, &proof).unwrap_or_else(|e| panic!("{m}->{n}: {e}"));
            let bad = |p: &[Hash], m: u64, n: u64, a: &Hash, b: &Hash| verify_consistency(m, n, a, b, p).is_err();
            for k in 0..proof.len() {
                assert!(bad(&flipped(&proof, k, (k * 5 + 1) as u8), m, n, &old_root, &new_root), "flip {k} {m}->{n}");
            }
            if !proof.is_empty() {
                assert!(bad(&proof[..proof.len() - 1], m, n, &old_root, &new_root), "truncated {m}->{n}");
            }
            let mut longer = proof.clone();
            longer.push(new_root);
            assert!(bad(&longer, m, n, &old_root, &new_root), "extended {m}->{n}");
            if m > 0 {
                assert!(bad(&proof, m, n, &flipped(&[old_root], 0, 1)[0], &new_root), "old root {m}->{n}");
                assert!(bad(&proof, m, n * 2, &old_root, &new_root), "size*2 {m}->{n}");
                if m < n / 2 {
                    assert!(bad(&proof, m, n / 2, &old_root, &new_root), "size/2 {m}->{n}");
                }
            }
            if m > 0 || m == n {
                assert!(bad(&proof, m, n, &old_root, &flipped(&[new_root], 0, 2)[0]), "new root {m}->{n}");
            }
            if m > 1 && m < n {
                assert!(bad(&proof, m - 1, n, &old_root, &new_root), "old size-1 {m}->{n}");
            }
            if m + 1 < n {
                assert!(bad(&proof, m + 1, n, &old_root, &new_root), "old size+1 {m}->{n}");
            }
        }
        assert!(tree.consistency_proof(n + 1, n).is_err());
    }
    assert!(verify_consistency(5, 4, &all[0], &all[0], &[]).is_err());
}

/// Two trees that share no prefix (a fork): no proof from one to the other verifies.
#[test]
fn forked_trees_are_never_consistent() {
    let honest = leaves(20);
    let mut forked = honest.clone();
    forked[7] = leaf_hash(b"rewritten");
    let a = Tree::from_leaves(honest.iter().copied());
    let b = Tree::from_leaves(forked.iter().copied());
    for m in 8..=20 {
        for n in m..=20 {
            let proof = b.consistency_proof(m, n).unwrap();
            assert!(verify_consistency(m, n, &a.root_at(m).unwrap(), &b.root_at(n).unwrap(), &proof).is_err());
        }
    }
}

#[test]
fn proofs_round_trip_through_json() {
    let tree = Tree::from_leaves(leaves(13));
    let p = Proof::Inclusion { index: 6, tree_size: 13, hashes: tree.inclusion_proof(6, 13).unwrap() };
    let back = Proof::from_json(p.to_json().as_bytes()).unwrap();
    assert_eq!(back, p);
    back.verify_inclusion(&tree.leaf(6).unwrap(), &tree.root()).unwrap();
    let c = Proof::Consistency { old_size: 5, tree_size: 13, hashes: tree.consistency_proof(5, 13).unwrap() };
    Proof::from_json(c.to_json().as_bytes())
        .unwrap()
        .verify_consistency(&tree.root_at(5).unwrap(), &tree.root())
        .unwrap();
    for bad in [
        r#"{"type":"inclusion","index":0,"tree_size":1,"hashes":["AAAA"]}"#,
        r#"{"type":"inclusion","index":0,"tree_size":1}"#,
        r#"{"type":"other","index":0,"tree_size":1,"hashes":[]}"#,
        r#"{"type":"inclusion","index":0,"tree_size":1,"hashes":[],"extra":1}"#,
    ] {
        assert!(Proof::from_json(bad.as_bytes()).is_err(), "{bad}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Larger, random sizes: roots and proofs agree with the recursive reference.
    #[test]
    fn random_sizes_agree_with_reference(n in 1usize..3000, seed in any::<u64>()) {
        let all = leaves(n);
        let tree = Tree::from_leaves(all.iter().copied());
        prop_assert_eq!(tree.root(), mth(&all));
        let i = (seed % n as u64) as usize;
        let m = ((seed >> 20) % (n as u64 + 1)) as usize;
        let proof = tree.inclusion_proof(i as u64, n as u64).unwrap();
        prop_assert!(proof.len() <= 64 - (n as u64).leading_zeros() as usize);
        prop_assert!(verify_inclusion(&all[i], i as u64, n as u64, &proof, &tree.root()).is_ok());
        let c = tree.consistency_proof(m as u64, n as u64).unwrap();
        prop_assert!(verify_consistency(m as u64, n as u64, &mth(&all[..m]), &tree.root(), &c).is_ok());
    }
}
