//! The images: the 8x8 handwritten digits built into the app, or MNIST-format IDX files
//! from `data-dir`; and how the training images are cut into one partition per node.
//!
//! The digits (`data/digits.txt`: 1797 images, as smartcore ships them) need no download:
//! a seeded fifth is the server's test set, the rest the nodes' pool. With `data-dir` set,
//! the pool is `train-images-idx3-ubyte` with `train-labels-idx1-ubyte` and the test set
//! `t10k-images-idx3-ubyte` with `t10k-labels-idx1-ubyte` (MNIST's files, unpacked).

use floret_app::floret_core::AppError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The digits 0-9.
pub const NUM_CLASSES: usize = 10;
/// Seeds the digits' test split: the same on the server and on every node.
const SPLIT_SEED: u64 = 42;
/// Share of the digits held out for the server's test set.
const TEST_FRACTION: f64 = 0.2;
/// The most ink a pixel of the digits holds.
const MAX_INK: u32 = 16;

const DIGITS_TXT: &str = include_str!("../../data/digits.txt");

/// Square grayscale images, pixels scaled to `[0, 1]`, and the digits they show.
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    /// Pixels per row (and per column).
    pub side: usize,
    /// `len() * side * side` pixels, image after image, row by row.
    pub pixels: Vec<f32>,
    /// The digit each image shows.
    pub labels: Vec<u8>,
}

impl Images {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Images {
        let size = self.side * self.side;
        Images {
            side: self.side,
            pixels: indices
                .iter()
                .flat_map(|&i| &self.pixels[i * size..(i + 1) * size])
                .copied()
                .collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// Where the images come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The bundled 8x8 digits.
    Digits,
    /// A directory with MNIST's four IDX files.
    Idx(PathBuf),
}

impl Source {
    /// `data-dir` as a config holds it: an empty string means the bundled digits.
    pub fn from_data_dir(data_dir: &str) -> Source {
        match data_dir.trim() {
            "" => Source::Digits,
            dir => Source::Idx(PathBuf::from(dir)),
        }
    }

    /// The images the nodes' partitions are cut from.
    pub fn pool(&self) -> Result<Arc<Images>, AppError> {
        match self {
            Source::Digits => Ok(digits_split()?.1.clone()),
            Source::Idx(dir) => idx_images(dir, "train"),
        }
    }

    /// The server's test images.
    pub fn test_set(&self) -> Result<Arc<Images>, AppError> {
        match self {
            Source::Digits => Ok(digits_split()?.0.clone()),
            Source::Idx(dir) => idx_images(dir, "t10k"),
        }
    }
}

/// The digits' test set and their pool.
type Split = (Arc<Images>, Arc<Images>);

/// The digits' test set and pool; read and split once per process.
fn digits_split() -> Result<&'static Split, AppError> {
    static SPLIT: OnceLock<Result<Split, String>> = OnceLock::new();
    SPLIT
        .get_or_init(|| {
            let digits = parse_digits(DIGITS_TXT)?;
            let mut order = shuffled(digits.len(), SPLIT_SEED);
            let pool = order.split_off((digits.len() as f64 * TEST_FRACTION).round() as usize);
            Ok((
                Arc::new(digits.select(&order)),
                Arc::new(digits.select(&pool)),
            ))
        })
        .as_ref()
        .map_err(|e| AppError::other(format!("data/digits.txt: {e}")))
}

/// Reads `data/digits.txt`: one image a line, its digit, a space, and its 64 pixels row by
/// row, each pixel's ink (0 to 16) as one base-17 digit (`0`-`9`, `a`-`g`).
fn parse_digits(text: &str) -> Result<Images, String> {
    let mut images = Images {
        side: 8,
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for (number, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}", number + 1);
        let (digit, pixels) = line
            .split_once(' ')
            .ok_or_else(|| at("expected a digit, a space and 64 pixels"))?;
        let label = digit
            .parse::<u8>()
            .ok()
            .filter(|&d| usize::from(d) < NUM_CLASSES)
            .ok_or_else(|| at(&format!("{digit:?} is not a digit")))?;
        if pixels.chars().count() != 64 {
            return Err(at("expected 64 pixels"));
        }
        for pixel in pixels.chars() {
            let ink = pixel
                .to_digit(MAX_INK + 1)
                .ok_or_else(|| at(&format!("{pixel:?} is not a pixel (0-9, a-g)")))?;
            images.pixels.push(ink as f32 / MAX_INK as f32);
        }
        images.labels.push(label);
    }
    if images.is_empty() {
        return Err("no images".to_owned());
    }
    Ok(images)
}

/// `PREFIX-images-idx3-ubyte` and `PREFIX-labels-idx1-ubyte` in `dir`; each pair is read
/// once per process, so the nodes of a simulation share one copy.
fn idx_images(dir: &Path, prefix: &str) -> Result<Arc<Images>, AppError> {
    static CACHE: Mutex<Vec<(PathBuf, Arc<Images>)>> = Mutex::new(Vec::new());
    let images_path = dir.join(format!("{prefix}-images-idx3-ubyte"));
    let labels_path = dir.join(format!("{prefix}-labels-idx1-ubyte"));
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, images)) = cache.iter().find(|(path, _)| *path == images_path) {
        return Ok(images.clone());
    }
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| {
            let hint = if Path::new(&format!("{}.gz", path.display())).exists() {
                " (unpack the .gz file next to it: gunzip -k)"
            } else {
                " (data-dir needs MNIST's four IDX files; an empty data-dir uses the bundled digits)"
            };
            AppError::Config(format!("data-dir: cannot read {}: {e}{hint}", path.display()))
        })
    };
    let images = read_idx(&read(&images_path)?, &read(&labels_path)?).map_err(|e| {
        AppError::Config(format!(
            "data-dir: {} and {}: {e}",
            images_path.display(),
            labels_path.display()
        ))
    })?;
    let images = Arc::new(images);
    cache.push((images_path, images.clone()));
    Ok(images)
}

/// Reads an IDX image file (magic 0x00000803: count, rows, columns, then one byte a pixel)
/// and its IDX label file (magic 0x00000801: count, then one byte a label), as MNIST
/// publishes them. Images must be square, with a side the model's two 2x2 poolings divide.
pub fn read_idx(images: &[u8], labels: &[u8]) -> Result<Images, String> {
    let header = |bytes: &[u8], magic: u32, dims: usize, what: &str| {
        let words: Vec<u32> = (0..=dims)
            .map(|i| {
                bytes
                    .get(4 * i..4 * i + 4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            })
            .collect::<Option<_>>()
            .ok_or_else(|| format!("the {what} file is shorter than its header"))?;
        if words[0] != magic {
            return Err(format!(
                "the {what} file starts with {:#010x}, not IDX's {magic:#010x}",
                words[0]
            ));
        }
        Ok(words[1..].iter().map(|&w| w as usize).collect::<Vec<_>>())
    };
    let dims = header(images, 0x0803, 3, "images")?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    let label_count = header(labels, 0x0801, 1, "labels")?[0];
    if count != label_count {
        return Err(format!("{count} images but {label_count} labels"));
    }
    if rows != cols || rows == 0 || rows % 4 != 0 {
        return Err(format!(
            "the images are {rows}x{cols}; the model takes square images with a side divisible by 4 (MNIST's are 28x28)"
        ));
    }
    let pixels = images
        .get(16..)
        .filter(|p| p.len() == count * rows * cols)
        .ok_or_else(|| format!("the images file does not hold {count} images of {rows}x{cols}"))?;
    let labels = labels
        .get(8..)
        .filter(|l| l.len() == count)
        .ok_or_else(|| format!("the labels file does not hold {count} labels"))?;
    if let Some(bad) = labels.iter().find(|&&l| usize::from(l) >= NUM_CLASSES) {
        return Err(format!("label {bad} is not a digit"));
    }
    if count == 0 {
        return Err("no images".to_owned());
    }
    Ok(Images {
        side: rows,
        pixels: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels: labels.to_vec(),
    })
}

/// How the pool is cut into partitions (`partitioner` and `alpha` in the run config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Partitioner {
    /// Even, seeded random shares: every node sees every digit about equally often.
    Iid,
    /// Each digit's images spread over the partitions in proportions drawn from a
    /// Dirichlet(alpha) distribution: a small alpha gives each node a few digits mostly,
    /// as real devices' data is skewed; a large one approaches IID.
    Dirichlet {
        /// The concentration, above 0.
        alpha: f64,
    },
}

impl Partitioner {
    /// `partitioner` and `alpha` as the run config names them.
    pub fn from_config(name: &str, alpha: f64) -> Result<Partitioner, AppError> {
        match name {
            "iid" => Ok(Partitioner::Iid),
            "dirichlet" if alpha.is_finite() && alpha > 0.0 => Ok(Partitioner::Dirichlet { alpha }),
            "dirichlet" => Err(AppError::Config(format!(
                "alpha must be a positive number for the dirichlet partitioner, but is {alpha}"
            ))),
            other => Err(AppError::Config(format!(
                "partitioner must be \"iid\" or \"dirichlet\", but is {other:?}"
            ))),
        }
    }
}

/// The indices into `labels` of partition `id` of `num` (`id < num`), the same on every
/// node for the same `seed`. No partition is empty: with more partitions than images, a
/// partition gets a single image, shared with others.
pub fn partition(
    labels: &[u8],
    partitioner: Partitioner,
    id: usize,
    num: usize,
    seed: u64,
) -> Vec<usize> {
    let n = labels.len();
    if num > n {
        return vec![shuffled(n, seed)[id % n.max(1)]];
    }
    match partitioner {
        Partitioner::Iid => shuffled(n, seed)[id * n / num..(id + 1) * n / num].to_vec(),
        Partitioner::Dirichlet { alpha } => dirichlet(labels, alpha, num, seed).swap_remove(id),
    }
}

/// All `num` partitions of a Dirichlet(alpha) split by label; an empty one takes an image
/// from the largest, so that every node has something to train on.
fn dirichlet(labels: &[u8], alpha: f64, num: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = SplitMix64(seed);
    let mut parts = vec![Vec::new(); num];
    for class in 0..NUM_CLASSES as u8 {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        let order = shuffled(members.len(), rng.next());
        members = order.iter().map(|&i| members[i]).collect();
        let shares: Vec<f64> = (0..num).map(|_| rng.gamma(alpha)).collect();
        let total: f64 = shares.iter().sum();
        let (mut start, mut cumulative) = (0, 0.0);
        for (part, share) in parts.iter_mut().zip(&shares) {
            cumulative += share;
            let end = if total > 0.0 {
                ((cumulative / total) * members.len() as f64).round() as usize
            } else {
                members.len()
            };
            let end = end.clamp(start, members.len());
            part.extend_from_slice(&members[start..end]);
            start = end;
        }
        if let Some(last) = parts.last_mut() {
            last.extend_from_slice(&members[start..]);
        }
    }
    while let Some(empty) = parts.iter().position(Vec::is_empty) {
        let largest = (0..num).max_by_key(|&p| parts[p].len()).unwrap_or(0);
        if parts[largest].len() < 2 {
            break;
        }
        let image = parts[largest].pop().unwrap_or_default();
        parts[empty].push(image);
    }
    for part in &mut parts {
        part.sort_unstable();
    }
    parts
}

/// `0..n` in a seeded random order.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

/// SplitMix64: a small seeded random number generator.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), up to a negligible bias.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `(0, 1)`.
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Gamma(shape, 1) by Marsaglia and Tsang's method; a shape below 1 is boosted by one
    /// and scaled back with a uniform draw.
    fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            return self.gamma(shape + 1.0) * self.uniform().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v > 0.0 && self.uniform().ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digits_split_into_a_test_set_and_a_pool() {
        let (test, pool) = digits_split().unwrap();
        assert_eq!((test.len(), pool.len()), (359, 1438));
        assert_eq!(test.side, 8);
        assert_eq!(pool.pixels.len(), 1438 * 64);
    }

    #[test]
    fn iid_partitions_cover_the_pool_once_and_none_is_empty() {
        let labels = &digits_split().unwrap().1.labels;
        for num in [1, 10, 200] {
            let mut all: Vec<usize> = (0..num)
                .flat_map(|id| partition(labels, Partitioner::Iid, id, num, 7))
                .collect();
            all.sort_unstable();
            assert_eq!(all, (0..labels.len()).collect::<Vec<_>>(), "{num}");
        }
        assert_eq!(partition(labels, Partitioner::Iid, 4999, 5000, 7).len(), 1);
    }

    #[test]
    fn a_small_alpha_skews_the_digits_a_node_sees_and_none_is_empty() {
        let labels = &digits_split().unwrap().1.labels;
        let classes_seen = |alpha: f64| {
            let partitioner = Partitioner::Dirichlet { alpha };
            let parts: Vec<Vec<usize>> = (0..10)
                .map(|id| partition(labels, partitioner, id, 10, 3))
                .collect();
            let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..labels.len()).collect::<Vec<_>>(), "alpha {alpha}");
            assert!(parts.iter().all(|p| !p.is_empty()), "alpha {alpha}");
            // Digits that make up at least a twentieth of a node's images, on average.
            let mut seen = 0;
            for part in &parts {
                let mut counts = [0usize; NUM_CLASSES];
                for &i in part {
                    counts[usize::from(labels[i])] += 1;
                }
                seen += counts.iter().filter(|&&c| c * 20 >= part.len()).count();
            }
            seen as f64 / parts.len() as f64
        };
        let (skewed, even) = (classes_seen(0.1), classes_seen(1000.0));
        assert!(skewed < 4.0 && even > 8.0, "{skewed} {even}");
        let parts: Vec<usize> = (0..200)
            .map(|id| partition(labels, Partitioner::Dirichlet { alpha: 0.1 }, id, 200, 3).len())
            .collect();
        assert!(parts.iter().all(|&n| n > 0), "{parts:?}");
    }

    #[test]
    fn bad_partitioner_settings_are_refused() {
        assert!(Partitioner::from_config("dirichlet", 0.0).is_err());
        assert!(Partitioner::from_config("dirichlet", f64::NAN).is_err());
        let e = Partitioner::from_config("shards", 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"iid\" or \"dirichlet\""), "{e}");
    }

    /// A tiny IDX pair as MNIST's files are laid out: big-endian header, then bytes.
    fn idx_pair(count: u32, side: u32) -> (Vec<u8>, Vec<u8>) {
        let mut images = [0x0803u32, count, side, side]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect::<Vec<u8>>();
        images.extend((0..count * side * side).map(|i| (i % 256) as u8));
        let mut labels = [0x0801u32, count]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect::<Vec<u8>>();
        labels.extend((0..count).map(|i| (i % 10) as u8));
        (images, labels)
    }

    #[test]
    fn idx_files_from_data_dir_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("idx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (prefix, count) in [("train", 12), ("t10k", 3)] {
            let (images, labels) = idx_pair(count, 4);
            std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
            std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
        }
        let source = Source::from_data_dir(dir.to_str().unwrap());
        let pool = source.pool().unwrap();
        assert_eq!((pool.len(), pool.side), (12, 4));
        assert_eq!(pool.labels[..3], [0, 1, 2]);
        assert_eq!(pool.pixels[17], 17.0 / 255.0);
        assert_eq!(source.test_set().unwrap().len(), 3);
        let missing = Source::from_data_dir(dir.join("nowhere").to_str().unwrap());
        let e = missing.pool().unwrap_err().to_string();
        assert!(e.contains("train-images-idx3-ubyte"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();

        let (images, labels) = idx_pair(2, 6);
        assert!(read_idx(&images, &labels).unwrap_err().contains("6x6"));
        let (images, labels) = idx_pair(2, 4);
        assert!(read_idx(&images[..20], &labels).is_err());
        assert!(
            read_idx(&images, &images)
                .unwrap_err()
                .contains("not IDX's 0x00000801")
        );
        assert_eq!(Source::from_data_dir(" "), Source::Digits);
    }
}
