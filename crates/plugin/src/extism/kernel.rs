//! The Extism ABI's memory: a byte space of the host's, apart from the
//! plugin's linear memory, that both sides address by 64-bit offsets (0
//! means "none"). Blocks are allocated, read and written through host
//! calls; every access is checked against the block it falls in.

use std::collections::BTreeMap;

/// Why a memory operation was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The range is not inside one allocated block.
    OutOfBounds { offset: u64, len: u64 },
    /// Allocating would pass the memory limit.
    Exhausted { wanted: u64 },
}

/// The blocks of one instance.
#[derive(Default)]
pub(crate) struct Kernel {
    /// Every byte blocks have reached so far, kept between calls.
    bytes: Vec<u8>,
    /// Where the next new block goes, less [`BASE`]: back to 0 at a reset,
    /// so that a session's calls reuse the same bytes.
    end: u64,
    /// Live blocks: start -> length.
    blocks: BTreeMap<u64, u64>,
    /// Freed blocks, reused first-fit: (start, capacity).
    free: Vec<(u64, u64)>,
    /// Capacity of a live block when it reuses a larger freed one.
    capacity: BTreeMap<u64, u64>,
    /// The last block a load or store fell in: plugins read and write a
    /// block in order, 8 bytes at a time.
    last: (u64, u64),
}

/// Offsets start here, so that 0 is never a block.
const BASE: u64 = 1;

/// What the host spends on a block beyond its bytes (its entries in the
/// maps), charged against the memory limit: a million one-byte blocks cost
/// the host far more than a megabyte.
const BLOCK_COST: u64 = 64;

impl Kernel {
    /// Bytes this memory holds, freed blocks included.
    pub(crate) fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// What this memory costs the host, against the plugin's memory limit:
    /// its bytes and its blocks' bookkeeping.
    pub(crate) fn cost(&self) -> u64 {
        let blocks = (self.blocks.len() + self.free.len()) as u64;
        self.size()
            .saturating_add(blocks.saturating_mul(BLOCK_COST))
    }

    /// Allocates `len` bytes (zeroed) if `budget` allows the memory to
    /// grow by what that takes.
    pub(crate) fn alloc(&mut self, len: u64, budget: u64) -> Result<u64, Fault> {
        if len == 0 {
            return Ok(0);
        }
        if let Some(i) = self.free.iter().position(|&(_, cap)| cap >= len) {
            let (start, cap) = self.free.swap_remove(i);
            let (s, l) = (start as usize, len as usize);
            self.bytes[s - BASE as usize..s - BASE as usize + l].fill(0);
            self.blocks.insert(start, len);
            if cap > len {
                self.capacity.insert(start, cap);
            }
            return Ok(start);
        }
        let exhausted = Fault::Exhausted { wanted: len };
        let start = self.end + BASE;
        let Some(new_end) = self.end.checked_add(len) else {
            return Err(exhausted);
        };
        if new_end
            .saturating_sub(self.size())
            .saturating_add(BLOCK_COST)
            > budget
        {
            return Err(exhausted);
        }
        let (Ok(from), Ok(to)) = (usize::try_from(self.end), usize::try_from(new_end)) else {
            return Err(exhausted);
        };
        if to > self.bytes.len() {
            self.bytes.resize(to, 0);
        }
        // Bytes an earlier call's blocks held.
        self.bytes[from..to].fill(0);
        self.end = new_end;
        self.blocks.insert(start, len);
        Ok(start)
    }

    /// Frees the block starting at `offset`; anything else is ignored.
    pub(crate) fn free(&mut self, offset: u64) {
        if let Some(len) = self.blocks.remove(&offset) {
            let cap = self.capacity.remove(&offset).unwrap_or(len);
            if self.last.0 == offset {
                self.last = (0, 0);
            }
            self.free.push((offset, cap));
        }
    }

    /// The length of the block starting at `offset`, or 0.
    pub(crate) fn length(&self, offset: u64) -> u64 {
        self.blocks.get(&offset).copied().unwrap_or(0)
    }

    /// The bytes of `offset..offset + len`, which must lie in one block.
    pub(crate) fn slice(&mut self, offset: u64, len: u64) -> Result<&[u8], Fault> {
        let at = self.check(offset, len)?;
        Ok(&self.bytes[at..at + len as usize])
    }

    /// The bytes of `offset..offset + len`, writable.
    pub(crate) fn slice_mut(&mut self, offset: u64, len: u64) -> Result<&mut [u8], Fault> {
        let at = self.check(offset, len)?;
        Ok(&mut self.bytes[at..at + len as usize])
    }

    /// The whole block starting at `offset`.
    pub(crate) fn block(&self, offset: u64) -> Option<&[u8]> {
        let len = *self.blocks.get(&offset)?;
        let at = (offset - BASE) as usize;
        Some(&self.bytes[at..at + len as usize])
    }

    /// A new block holding `data`.
    pub(crate) fn alloc_with(&mut self, data: &[u8], budget: u64) -> Result<u64, Fault> {
        let offset = self.alloc(data.len() as u64, budget)?;
        if offset != 0 {
            self.slice_mut(offset, data.len() as u64)?
                .copy_from_slice(data);
        }
        Ok(offset)
    }

    /// Drops every block (between calls of a session). The bytes stay, and
    /// new blocks are laid over them from the start again: blocks never
    /// creep upwards from one call to the next.
    pub(crate) fn reset(&mut self) {
        self.blocks.clear();
        self.capacity.clear();
        self.free.clear();
        self.last = (0, 0);
        self.end = 0;
    }

    /// The index in `bytes` of `offset`, if `offset..offset + len` lies in
    /// one live block.
    fn check(&mut self, offset: u64, len: u64) -> Result<usize, Fault> {
        let fault = Fault::OutOfBounds { offset, len };
        let end = offset
            .checked_add(len)
            .ok_or(Fault::OutOfBounds { offset, len })?;
        let (start, block_len) = self.last;
        if start != 0 && offset >= start && end <= start + block_len {
            return Ok((offset - BASE) as usize);
        }
        let (&start, &block_len) = self.blocks.range(..=offset).next_back().ok_or(fault)?;
        if end > start + block_len {
            return Err(Fault::OutOfBounds { offset, len });
        }
        self.last = (start, block_len);
        Ok((offset - BASE) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_bounded_and_reused() {
        let mut k = Kernel::default();
        assert_eq!(k.alloc(0, 100), Ok(0));
        let a = k.alloc(16, 100).unwrap();
        let b = k.alloc(8, 100).unwrap();
        assert_ne!(a, 0);
        assert_eq!(k.length(a), 16);
        assert_eq!(k.length(a + 1), 0);
        k.slice_mut(a + 8, 8).unwrap().copy_from_slice(&[7; 8]);
        assert_eq!(k.slice(a + 8, 8).unwrap(), &[7; 8]);
        // A range may not run from one block into the next.
        assert!(k.slice(a + 12, 8).is_err());
        assert!(k.slice(u64::MAX - 3, 8).is_err());
        assert!(k.slice(0, 1).is_err());
        k.free(a);
        assert!(k.slice(a, 1).is_err());
        let c = k.alloc(10, 100).unwrap();
        assert_eq!(c, a);
        assert_eq!(k.slice(c, 10).unwrap(), &[0; 10]);
        assert_eq!(k.alloc(200, 100), Err(Fault::Exhausted { wanted: 200 }));
        assert_eq!(k.block(b).unwrap().len(), 8);
    }

    #[test]
    fn a_reset_reuses_the_bytes_zeroed_and_blocks_do_not_creep() {
        let mut k = Kernel::default();
        for _ in 0..100 {
            k.reset();
            // A call that makes three blocks and writes them.
            for len in [16, 8, 32] {
                let at = k.alloc(len, 1 << 20).unwrap();
                assert!(k.slice(at, len).unwrap().iter().all(|&b| b == 0), "zeroed");
                k.slice_mut(at, len).unwrap().fill(0xff);
            }
        }
        assert_eq!(k.size(), 56, "each call reused the first call's bytes");
        // Growing past what the budget allows is still refused.
        k.reset();
        assert!(k.alloc(56, BLOCK_COST).is_ok(), "within the bytes held");
        assert_eq!(k.alloc(1, BLOCK_COST), Err(Fault::Exhausted { wanted: 1 }));
    }

    #[test]
    fn tiny_blocks_are_charged_their_bookkeeping() {
        const MAX: u64 = 1 << 20;
        let mut k = Kernel::default();
        let mut blocks = 0;
        while k.alloc(1, MAX - k.cost()).is_ok() {
            blocks += 1;
        }
        assert_eq!(blocks, MAX / (1 + BLOCK_COST));
        assert!(k.cost() <= MAX);
    }
}
