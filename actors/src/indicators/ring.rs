//! A fixed-capacity ring buffer of `f64`: the sliding window behind the windowed indicators.

/// The last `capacity` values pushed, oldest first. Never reallocates after construction.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    buf: Vec<f64>,
    /// Next write position; when full it is also the position of the oldest value.
    head: usize,
    len: usize,
}

impl Ring {
    /// A ring holding up to `capacity` values (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self { buf: vec![0.0; capacity.max(1)], head: 0, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// Appends `x`, dropping the oldest value when full.
    pub(crate) fn push(&mut self, x: f64) {
        self.buf[self.head] = x;
        self.head = (self.head + 1) % self.buf.len();
        if self.len < self.buf.len() {
            self.len += 1;
        }
    }

    /// The oldest value held, if any.
    pub(crate) fn oldest(&self) -> Option<f64> {
        (self.len > 0).then(|| self.buf[(self.head + self.buf.len() - self.len) % self.buf.len()])
    }

    /// The values held, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        let cap = self.buf.len();
        let start = self.head + cap - self.len;
        (0..self.len).map(move |i| self.buf[(start + i) % cap])
    }

    /// The window of the newest `capacity` values as it would be after pushing `x`, oldest first.
    pub(crate) fn window_with(&self, x: f64) -> impl Iterator<Item = f64> + '_ {
        self.iter().skip(usize::from(self.is_full())).chain(std::iter::once(x))
    }

    pub(crate) fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::Ring;

    #[test]
    fn keeps_the_newest_values_in_order() {
        let mut r = Ring::new(3);
        assert_eq!(r.oldest(), None);
        for x in [1.0, 2.0, 3.0, 4.0] {
            r.push(x);
        }
        assert!(r.is_full());
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![2.0, 3.0, 4.0]);
        assert_eq!(r.window_with(5.0).collect::<Vec<_>>(), vec![3.0, 4.0, 5.0]);
        assert_eq!(r.oldest(), Some(2.0));
        r.clear();
        assert_eq!(r.len(), 0);
        assert_eq!(r.window_with(9.0).collect::<Vec<_>>(), vec![9.0]);
    }
}
