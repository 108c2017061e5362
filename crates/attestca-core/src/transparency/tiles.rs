//! The log's Merkle tree as C2SP tlog-tiles: tile paths, entry bundles, and integrating new
//! leaves into the stored right edge of the tree.
//!
//! The tree arithmetic (stored hash indexes, subtree hashes, proofs) is `tlog_tiles`'s, a port
//! of Go's `golang.org/x/mod/sumdb/tlog`. Its `Tile::path` is the Go checksum database's layout
//! (`tile/8/0/…`, with the height); C2SP tlog-tiles has no height in the path and names entry
//! bundles `tile/entries/…`, so paths are written and parsed here.

use std::collections::HashMap;

use tlog_tiles::{HashReader, Tile};

/// Tile height (C2SP tlog-tiles fixes it at 8: 256 hashes per full tile).
pub const TILE_HEIGHT: u8 = 8;
/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
const HASH_SIZE: usize = 32;

/// What a tile holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileKind {
    /// Merkle tree hashes at this tile level (0..=63).
    Hashes(u8),
    /// Log entries (an entry bundle).
    Entries,
}

/// A tile or entry bundle resource: `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TilePath {
    pub kind: TileKind,
    pub index: u64,
    /// 1..=256; 256 is a full tile (no `.p/` suffix).
    pub width: u16,
}

/// A path that is not a tile of this log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a tile path: {0}")]
pub struct BadTilePath(pub String);

impl TilePath {
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// The path below the log's prefix.
    pub fn to_path(&self) -> String {
        let level = match self.kind {
            TileKind::Hashes(level) => level.to_string(),
            TileKind::Entries => "entries".to_owned(),
        };
        let mut groups = vec![format!("{:03}", self.index % 1000)];
        let mut n = self.index / 1000;
        while n > 0 {
            groups.push(format!("x{:03}", n % 1000));
            n /= 1000;
        }
        groups.reverse();
        let mut path = format!("tile/{level}/{}", groups.join("/"));
        if !self.is_full() {
            path.push_str(&format!(".p/{}", self.width));
        }
        path
    }

    /// Parses a path below the log's prefix, strictly: no leading zeroes where the
    /// specification forbids them, three-digit groups, `x` on all but the last.
    pub fn parse(path: &str) -> Result<Self, BadTilePath> {
        let bad = || BadTilePath(path.chars().take(80).collect());
        if path.len() > 80 {
            return Err(bad());
        }
        let rest = path.strip_prefix("tile/").ok_or_else(bad)?;
        let (level, rest) = rest.split_once('/').ok_or_else(bad)?;
        let kind = if level == "entries" {
            TileKind::Entries
        } else {
            let value = decimal(level).filter(|l| *l < 64).ok_or_else(bad)?;
            TileKind::Hashes(value as u8)
        };
        let (groups, width) = match rest.split_once(".p/") {
            Some((groups, w)) => {
                let w = decimal(w)
                    .filter(|w| (1..TILE_WIDTH).contains(w))
                    .ok_or_else(bad)?;
                (groups, w as u16)
            }
            None => (rest, TILE_WIDTH as u16),
        };
        let parts: Vec<&str> = groups.split('/').collect();
        let mut index: u64 = 0;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let digits = if last {
                *part
            } else {
                part.strip_prefix('x').ok_or_else(bad)?
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let value: u64 = digits.parse().map_err(|_| bad())?;
            index = index
                .checked_mul(1000)
                .and_then(|i| i.checked_add(value))
                .ok_or_else(bad)?;
        }
        // One encoding per index: no leading all-zero groups.
        if parts.len() > 1 && parts[0] == "x000" {
            return Err(bad());
        }
        Ok(Self { kind, index, width })
    }
}

/// A decimal without leading zeroes (C2SP tlog-tiles levels and widths).
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 3 || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse().ok())?
}

/// The hash tiles an append to a tree of `size` leaves reads: at each level, the rightmost
/// tile when it is partial (a full tile's hashes are never needed again by an append). As
/// (level, index).
pub fn edge_tiles(size: u64) -> Vec<(u8, u64)> {
    let mut tiles = Vec::new();
    let mut level = 0u8;
    while level < 64 && (size >> (u32::from(level) * 8)) > 0 {
        let nodes = size >> (u32::from(level) * 8);
        if !nodes.is_multiple_of(TILE_WIDTH) {
            tiles.push((level, nodes / TILE_WIDTH));
        }
        level += 1;
    }
    tiles
}

/// Every hash tile of a tree of `size` leaves (full tiles, then the partial ones).
pub fn hash_tiles_of(size: u64) -> Vec<TilePath> {
    Tile::new_tiles(TILE_HEIGHT, 0, size)
        .into_iter()
        .map(|tile| TilePath {
            kind: TileKind::Hashes(tile.level()),
            index: tile.level_index(),
            width: tile.width() as u16,
        })
        .collect()
}

/// Every entry bundle of a log of `size` entries.
pub fn bundles_of(size: u64) -> Vec<TilePath> {
    let mut bundles: Vec<TilePath> = (0..size / TILE_WIDTH)
        .map(|index| bundle_path(index, TILE_WIDTH))
        .collect();
    if !size.is_multiple_of(TILE_WIDTH) {
        bundles.push(bundle_path(size / TILE_WIDTH, size % TILE_WIDTH));
    }
    bundles
}

/// The result of integrating leaves: the new size and root, and every tile (full or partial,
/// with its data) that changed.
#[derive(Debug)]
pub struct Integrated {
    pub size: u64,
    pub root: [u8; 32],
    pub tiles: Vec<(TilePath, Vec<u8>)>,
}

/// A tree operation that could not be done: a tile the edge should hold is missing or short.
#[derive(Debug, thiserror::Error)]
#[error("transparency log tree: {0}")]
pub struct TreeError(pub String);

/// Appends `leaves` (leaf hashes, [`super::entry::leaf_hash`]) to a tree of `size` leaves
/// whose [`edge_tiles`] are in `edge` (keyed by (level, index), each its widest data).
pub fn integrate(
    size: u64,
    edge: &HashMap<(u8, u64), Vec<u8>>,
    leaves: &[[u8; 32]],
) -> Result<Integrated, TreeError> {
    let mut reader = EdgeReader {
        edge,
        new: HashMap::new(),
    };
    for (i, leaf) in leaves.iter().enumerate() {
        let n = size + i as u64;
        let hashes = tlog_tiles::stored_hashes_for_record_hash(n, tlog_tiles::Hash(*leaf), &reader)
            .map_err(|e| TreeError(format!("leaf {n}: {e}")))?;
        let first = tlog_tiles::stored_hash_index(0, n);
        for (k, hash) in hashes.into_iter().enumerate() {
            reader.new.insert(first + k as u64, hash);
        }
    }
    let new_size = size + leaves.len() as u64;
    let root = if new_size == 0 {
        tlog_tiles::EMPTY_HASH
    } else {
        tlog_tiles::tree_hash(new_size, &reader).map_err(|e| TreeError(e.to_string()))?
    };
    let mut tiles = Vec::new();
    for tile in Tile::new_tiles(TILE_HEIGHT, size, new_size) {
        let data = tile
            .read_data(&reader)
            .map_err(|e| TreeError(format!("tile {tile:?}: {e}")))?;
        tiles.push((
            TilePath {
                kind: TileKind::Hashes(tile.level()),
                index: tile.level_index(),
                width: tile.width() as u16,
            },
            data,
        ));
    }
    Ok(Integrated {
        size: new_size,
        root: root.0,
        tiles,
    })
}

/// Reads stored hashes from the edge tiles and the hashes computed in this integration.
struct EdgeReader<'a> {
    edge: &'a HashMap<(u8, u64), Vec<u8>>,
    new: HashMap<u64, tlog_tiles::Hash>,
}

impl HashReader for EdgeReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|index| {
                if let Some(hash) = self.new.get(index) {
                    return Ok(*hash);
                }
                let tile = Tile::from_index(TILE_HEIGHT, *index);
                let data = self
                    .edge
                    .get(&(tile.level(), tile.level_index()))
                    .ok_or(tlog_tiles::Error::InvalidTile)?;
                tile.hash_at_index(data, *index)
            })
            .collect()
    }
}

/// Reads stored hashes from whole tiles (a verifier's view: every tile it fetched).
pub struct TileSet {
    tiles: HashMap<(u8, u64), Vec<u8>>,
}

impl TileSet {
    pub fn new(tiles: HashMap<(u8, u64), Vec<u8>>) -> Self {
        Self { tiles }
    }
}

impl HashReader for TileSet {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        EdgeReader {
            edge: &self.tiles,
            new: HashMap::new(),
        }
        .read_hashes(indexes)
    }
}

/// A Merkle proof the log's hash tiles answer: an RFC 9162 §2.1.3 inclusion proof of leaf
/// `index` in the tree of `size` leaves, or a §2.1.4 consistency proof from the tree of `old`
/// leaves to the tree of `new`.
///
/// Why two steps ([`ProofRequest::tiles`], then [`ProofRequest::prove`]): the fetching is the
/// caller's (HTTP for a relying party, the database for the CA) and asynchronous; the
/// arithmetic is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProofRequest {
    Inclusion { index: u64, size: u64 },
    Consistency { old: u64, new: u64 },
}

impl ProofRequest {
    fn run<R: HashReader>(self, reader: &R) -> Result<Vec<tlog_tiles::Hash>, TreeError> {
        match self {
            ProofRequest::Inclusion { index, size } => {
                tlog_tiles::prove_record(size, index, reader)
                    .map_err(|e| TreeError(format!("leaf {index} of {size}: {e}")))
            }
            ProofRequest::Consistency { old, new } => tlog_tiles::prove_tree(new, old, reader)
                .map_err(|e| TreeError(format!("{old} to {new}: {e}"))),
        }
    }

    /// The size of the tree the proof is in.
    fn size(self) -> u64 {
        match self {
            ProofRequest::Inclusion { size, .. } => size,
            ProofRequest::Consistency { new, .. } => new,
        }
    }

    /// The hash tiles the proof reads, at their width in the tree it is in.
    pub fn tiles(self) -> Result<Vec<TilePath>, TreeError> {
        let wanted = WantedHashes::default();
        self.run(&wanted)?;
        Ok(wanted.paths(self.size()))
    }

    /// The proof's hashes, read from `tiles` (at least those [`ProofRequest::tiles`] names,
    /// keyed by (level, index)).
    pub fn prove(self, tiles: &HashMap<(u8, u64), Vec<u8>>) -> Result<Vec<[u8; 32]>, TreeError> {
        let reader = EdgeReader {
            edge: tiles,
            new: HashMap::new(),
        };
        Ok(self.run(&reader)?.into_iter().map(|h| h.0).collect())
    }
}

/// Whether `proof` shows the leaf hash `leaf` at `index` in the tree of `size` leaves whose
/// root is `root`.
pub fn inclusion_holds(
    index: u64,
    size: u64,
    leaf: [u8; 32],
    proof: &[[u8; 32]],
    root: [u8; 32],
) -> bool {
    let proof: Vec<tlog_tiles::Hash> = proof.iter().map(|h| tlog_tiles::Hash(*h)).collect();
    tlog_tiles::check_record(
        &proof,
        size,
        tlog_tiles::Hash(root),
        index,
        tlog_tiles::Hash(leaf),
    )
    .is_ok()
}

/// The width of hash tile (`level`, `index`) in a tree of `size` leaves.
fn width_at(level: u8, index: u64, size: u64) -> u16 {
    let hashes = size >> (u32::from(level) * u32::from(TILE_HEIGHT));
    hashes.saturating_sub(index * TILE_WIDTH).min(TILE_WIDTH) as u16
}

/// The entry bundle holding leaf `index` of a log of `size` entries, at its width there.
pub fn bundle_of(index: u64, size: u64) -> TilePath {
    let tile = index / TILE_WIDTH;
    bundle_path(tile, (size - tile * TILE_WIDTH).min(TILE_WIDTH))
}

/// A hash reader that answers zeros and notes which tiles the hashes asked for live in.
#[derive(Default)]
struct WantedHashes {
    tiles: std::cell::RefCell<std::collections::BTreeSet<(u8, u64)>>,
}

impl WantedHashes {
    /// The tiles asked for, at their width in a tree of `size` leaves.
    fn paths(self, size: u64) -> Vec<TilePath> {
        let mut tiles: Vec<TilePath> = self
            .tiles
            .into_inner()
            .into_iter()
            .map(|(level, index)| TilePath {
                kind: TileKind::Hashes(level),
                index,
                width: width_at(level, index, size),
            })
            .collect();
        tiles.sort_by_key(|t| (t.kind, t.index));
        tiles
    }
}

impl HashReader for WantedHashes {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        let mut tiles = self.tiles.borrow_mut();
        for index in indexes {
            let tile = Tile::from_index(TILE_HEIGHT, *index);
            tiles.insert((tile.level(), tile.level_index()));
        }
        Ok(vec![tlog_tiles::Hash([0; 32]); indexes.len()])
    }
}

/// Appends entries to the entry bundles of a log of `size` entries, whose rightmost bundle, if
/// partial, is `partial` (its data). Returns every bundle that changed, with its data.
pub fn append_to_bundles(
    size: u64,
    partial: Option<&[u8]>,
    entries: &[Vec<u8>],
) -> Result<Vec<(TilePath, Vec<u8>)>, TreeError> {
    let mut bundles = Vec::new();
    let mut index = size / TILE_WIDTH;
    let mut width = size % TILE_WIDTH;
    let mut data = if width == 0 {
        Vec::new()
    } else {
        let partial = partial.ok_or_else(|| TreeError(format!("entry bundle {index} missing")))?;
        if bundle_entries(partial)?.len() as u64 != width {
            return Err(TreeError(format!(
                "entry bundle {index} is not {width} wide"
            )));
        }
        partial.to_vec()
    };
    for entry in entries {
        let len = u16::try_from(entry.len())
            .map_err(|_| TreeError(format!("entry of {} octets", entry.len())))?;
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(entry);
        width += 1;
        if width == TILE_WIDTH {
            bundles.push((bundle_path(index, width), std::mem::take(&mut data)));
            index += 1;
            width = 0;
        }
    }
    if width > 0 && !entries.is_empty() {
        bundles.push((bundle_path(index, width), data));
    }
    Ok(bundles)
}

fn bundle_path(index: u64, width: u64) -> TilePath {
    TilePath {
        kind: TileKind::Entries,
        index,
        width: width as u16,
    }
}

/// The entries of a bundle, in order.
pub fn bundle_entries(data: &[u8]) -> Result<Vec<&[u8]>, TreeError> {
    let mut entries = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < 2 {
            return Err(TreeError("entry bundle truncated".into()));
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if rest.len() < 2 + len {
            return Err(TreeError("entry bundle truncated".into()));
        }
        entries.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
        if entries.len() as u64 > TILE_WIDTH {
            return Err(TreeError("entry bundle holds more than 256 entries".into()));
        }
    }
    Ok(entries)
}

/// The first `width` hashes or entries of a tile's data: the partial tile `.p/<width>` served
/// from the widest data stored.
pub fn prefix_of(kind: TileKind, data: &[u8], width: u16) -> Option<Vec<u8>> {
    let width = usize::from(width);
    match kind {
        TileKind::Hashes(_) => data.get(..width * HASH_SIZE).map(<[u8]>::to_vec),
        TileKind::Entries => {
            let mut end = 0;
            for _ in 0..width {
                let len = data.get(end..end + 2)?;
                end += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
                if end > data.len() {
                    return None;
                }
            }
            Some(data[..end].to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// RFC 6962 §2.1 Merkle Tree Hash, written from the RFC for this test (not the log's code).
    fn mth(leaves: &[[u8; 32]]) -> [u8; 32] {
        match leaves.len() {
            0 => Sha256::digest(b"").into(),
            1 => leaves[0],
            n => {
                let k = n.next_power_of_two() / 2;
                let mut h = Sha256::new();
                h.update([1u8]);
                h.update(mth(&leaves[..k]));
                h.update(mth(&leaves[k..]));
                h.finalize().into()
            }
        }
    }

    #[test]
    fn paths_are_c2sps_both_ways() {
        let cases = [
            (TileKind::Hashes(0), 1_234_067, 256, "tile/0/x001/x234/067"),
            (TileKind::Hashes(1), 5, 17, "tile/1/005.p/17"),
            (TileKind::Entries, 0, 256, "tile/entries/000"),
            (TileKind::Entries, 1000, 3, "tile/entries/x001/000.p/3"),
        ];
        for (kind, index, width, path) in cases {
            let tile = TilePath { kind, index, width };
            assert_eq!(tile.to_path(), path);
            assert_eq!(TilePath::parse(path), Ok(tile));
        }
        for bad in [
            "tile/00/000",
            "tile/64/000",
            "tile/0/1",
            "tile/0/x000/001",
            "tile/0/001/002",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/07",
            "tile/data/000",
            "checkpoint",
            "tile/0/x001/x234/067/",
        ] {
            assert!(TilePath::parse(bad).is_err(), "{bad}");
        }
    }

    /// Appends in uneven batches, keeping only what the log stores (the widest data of each
    /// tile), and checks the root against RFC 6962 after every batch, and the tiles against
    /// the definition in C2SP tlog-tiles.
    #[test]
    fn integration_in_batches_matches_rfc_6962() {
        let leaves: Vec<[u8; 32]> = (0..70_000u32)
            .map(|i| super::super::entry::leaf_hash(&i.to_be_bytes()))
            .collect();
        let mut stored: HashMap<(u8, u64), Vec<u8>> = HashMap::new();
        let mut size = 0u64;
        for batch in [1usize, 2, 253, 1, 300, 65_536, 1, 3906] {
            let edge: HashMap<_, _> = edge_tiles(size)
                .into_iter()
                .filter_map(|k| stored.get(&k).map(|d| (k, d.clone())))
                .collect();
            let start = size as usize;
            let done = integrate(size, &edge, &leaves[start..start + batch]).expect("integrate");
            size = done.size;
            assert_eq!(done.root, mth(&leaves[..size as usize]), "root at {size}");
            for (path, data) in done.tiles {
                let TileKind::Hashes(level) = path.kind else {
                    panic!("hash tiles only")
                };
                assert_eq!(data.len(), usize::from(path.width) * 32);
                stored.insert((level, path.index), data);
            }
        }
        // The spec's example: a tree of 70,000 has 273 full level-0 tiles, a partial of 112,
        // a full level-1 tile, a partial level-1 tile of 17 and a partial level-2 tile of 1.
        assert_eq!(stored.get(&(0, 273)).map(|d| d.len() / 32), Some(112));
        assert_eq!(stored.get(&(1, 0)).map(|d| d.len() / 32), Some(256));
        assert_eq!(stored.get(&(1, 1)).map(|d| d.len() / 32), Some(17));
        assert_eq!(stored.get(&(2, 0)).map(|d| d.len() / 32), Some(1));
        // Level 1, tile 0, hash 5: MTH of leaves 5*256..6*256.
        assert_eq!(
            stored[&(1, 0)][5 * 32..6 * 32],
            mth(&leaves[5 * 256..6 * 256])
        );
        // And the verifier's reader finds the root from the tiles alone.
        let set = TileSet::new(stored);
        let root = tlog_tiles::tree_hash(size, &set).expect("tree hash");
        assert_eq!(root.0, mth(&leaves));
    }

    fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update(left);
        h.update(right);
        h.finalize().into()
    }

    /// RFC 9162 §2.1.3.2, written from the RFC for this test.
    fn verify_inclusion(
        index: u64,
        size: u64,
        leaf: [u8; 32],
        path: &[[u8; 32]],
        root: [u8; 32],
    ) -> bool {
        if index >= size {
            return false;
        }
        let (mut f, mut s) = (index, size - 1);
        let mut r = leaf;
        for p in path {
            if s == 0 {
                return false;
            }
            if f & 1 == 1 || f == s {
                r = node(p, &r);
                if f & 1 == 0 {
                    while f & 1 == 0 && f != 0 {
                        f >>= 1;
                        s >>= 1;
                    }
                }
            } else {
                r = node(&r, p);
            }
            f >>= 1;
            s >>= 1;
        }
        s == 0 && r == root
    }

    /// RFC 9162 §2.1.4.2, written from the RFC for this test (first < second).
    fn verify_consistency(
        first: u64,
        second: u64,
        first_root: [u8; 32],
        second_root: [u8; 32],
        proof: &[[u8; 32]],
    ) -> bool {
        let mut path = proof.to_vec();
        if path.is_empty() {
            return false;
        }
        if first.is_power_of_two() {
            path.insert(0, first_root);
        }
        let (mut f, mut s) = (first - 1, second - 1);
        while f & 1 == 1 {
            f >>= 1;
            s >>= 1;
        }
        let (mut fr, mut sr) = (path[0], path[0]);
        for c in &path[1..] {
            if s == 0 {
                return false;
            }
            if f & 1 == 1 || f == s {
                fr = node(c, &fr);
                sr = node(c, &sr);
                if f & 1 == 0 {
                    while f & 1 == 0 && f != 0 {
                        f >>= 1;
                        s >>= 1;
                    }
                }
            } else {
                sr = node(&sr, c);
            }
            f >>= 1;
            s >>= 1;
        }
        fr == first_root && sr == second_root && s == 0
    }

    /// Proofs computed from the served tiles alone (what a verifier has) verify under RFC
    /// 9162's algorithms, and fail for a wrong leaf or root.
    /// Exactly the tiles `request` names, at their width, cut from the widest stored.
    fn named_tiles(
        request: ProofRequest,
        stored: &HashMap<(u8, u64), Vec<u8>>,
    ) -> HashMap<(u8, u64), Vec<u8>> {
        request
            .tiles()
            .expect("tiles")
            .into_iter()
            .map(|p| {
                let TileKind::Hashes(level) = p.kind else {
                    unreachable!("hash tiles only")
                };
                let data = prefix_of(p.kind, &stored[&(level, p.index)], p.width)
                    .expect("within the widest");
                ((level, p.index), data)
            })
            .collect()
    }

    #[test]
    fn proofs_from_the_tiles_verify_under_rfc_9162() {
        let leaves: Vec<[u8; 32]> = (0..1_000u32)
            .map(|i| super::super::entry::leaf_hash(&i.to_be_bytes()))
            .collect();
        let built = integrate(0, &HashMap::new(), &leaves).expect("tree");
        let tiles: HashMap<(u8, u64), Vec<u8>> = built
            .tiles
            .into_iter()
            .map(|(p, d)| match p.kind {
                TileKind::Hashes(level) => ((level, p.index), d),
                TileKind::Entries => unreachable!("hash tiles only"),
            })
            .collect();
        let built_tiles = tiles.clone();
        let set = TileSet::new(tiles);
        for (n, t) in [
            (0u64, 1u64),
            (0, 1000),
            (255, 256),
            (256, 1000),
            (999, 1000),
            (5, 7),
            (600, 777),
        ] {
            let root = mth(&leaves[..t as usize]);
            let proof: Vec<[u8; 32]> = tlog_tiles::prove_record(t, n, &set)
                .expect("inclusion proof")
                .into_iter()
                .map(|h| h.0)
                .collect();
            assert!(
                verify_inclusion(n, t, leaves[n as usize], &proof, root),
                "{n} in {t}"
            );
            // What a relying party does: only the named tiles, at their width in tree t.
            let request = ProofRequest::Inclusion { index: n, size: t };
            let wanted = named_tiles(request, &built_tiles);
            let narrow = request.prove(&wanted).expect("proof from the named tiles");
            assert_eq!(narrow, proof);
            assert!(inclusion_holds(n, t, leaves[n as usize], &narrow, root));
            let mut wrong_root = root;
            wrong_root[31] ^= 1;
            assert!(!inclusion_holds(
                n,
                t,
                leaves[n as usize],
                &narrow,
                wrong_root
            ));
            assert!(!verify_inclusion(
                n,
                t,
                leaves[(n as usize + 1) % 1000],
                &proof,
                root
            ));
        }
        for (m, t) in [
            (1u64, 2u64),
            (3, 7),
            (4, 1000),
            (256, 1000),
            (511, 777),
            (999, 1000),
        ] {
            let (old, new) = (mth(&leaves[..m as usize]), mth(&leaves[..t as usize]));
            let proof: Vec<[u8; 32]> = tlog_tiles::prove_tree(t, m, &set)
                .expect("consistency proof")
                .into_iter()
                .map(|h| h.0)
                .collect();
            assert!(verify_consistency(m, t, old, new, &proof), "{m} -> {t}");
            let request = ProofRequest::Consistency { old: m, new: t };
            let wanted = named_tiles(request, &built_tiles);
            assert_eq!(request.prove(&wanted).expect("from the named tiles"), proof);
            let mut forked = old;
            forked[0] ^= 1;
            assert!(
                !verify_consistency(m, t, forked, new, &proof),
                "{m} -> {t} forked"
            );
        }
    }

    #[test]
    fn bundles_grow_split_at_256_and_serve_their_prefixes() {
        let entries: Vec<Vec<u8>> = (0..300u32)
            .map(|i| vec![i as u8; (i % 7) as usize])
            .collect();
        let first = append_to_bundles(0, None, &entries[..250]).expect("append");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0.width, 250);
        let second = append_to_bundles(250, Some(&first[0].1), &entries[250..]).expect("append");
        assert_eq!(
            second
                .iter()
                .map(|(p, _)| (p.index, p.width))
                .collect::<Vec<_>>(),
            [(0, 256), (1, 44)]
        );
        let full = bundle_entries(&second[0].1).expect("entries");
        assert_eq!(full.len(), 256);
        assert_eq!(full[255], entries[255].as_slice());
        let prefix = prefix_of(TileKind::Entries, &second[0].1, 250).expect("prefix");
        assert_eq!(prefix, first[0].1);
        assert!(append_to_bundles(250, None, &entries[250..]).is_err());
        assert!(bundle_entries(&[0, 5, 1]).is_err());
    }
}
