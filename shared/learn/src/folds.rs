//! Random but reproducible splits: the shuffling generator and stratified folds, which
//! training (calibration) and cross-validation share.

/// A small deterministic generator (xorshift64*), for shuffling.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Assigns each message a fold `0..k`, each label spread evenly over the folds.
pub fn stratified_folds(y: &[usize], n_labels: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let mut fold = vec![0usize; y.len()];
    let mut next = 0usize;
    for label in 0..n_labels {
        let mut idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] == label).collect();
        rng.shuffle(&mut idx);
        for i in idx {
            fold[i] = next % k;
            next += 1;
        }
    }
    fold
}
