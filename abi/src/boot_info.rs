//! The boot information a 64-bit payload (ELF64, flat, Hermit) finds at start: who it is,
//! its vCPUs, its memory and its connections, so a runtime needs no probing and no
//! configuration of its own.
//!
//! The partition loader writes it at [`BOOT_INFO_GPA`] in the partition's boot area and
//! passes that address in RSI (RDI keeps the command line). Layout, little-endian, version
//! [`VERSION`]:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | [`MAGIC`] |
//! | 8 | 4 | version |
//! | 12 | 4 | total length in bytes (header and the three arrays) |
//! | 16 | 4 | vCPU count *n* |
//! | 20 | 4 | memory region count *m* |
//! | 24 | 4 | connection count *c* |
//! | 28 | 4 | reserved, 0 |
//! | 32 | 32 | partition name, ASCII, NUL-padded |
//! | 64 | 4·*n*, padded to 8 | APIC ID of each vCPU, in VP index order (index 0 starts first) |
//! | then | 16·*m* | memory regions: the partition's RAM (its readable and writable regions), guest-physical base (8), size (8), ascending |
//! | then | 48·*c* | connections, each a [`Connection`] in the layout of a BHCN table entry |
//!
//! The connection entry is the same 48 bytes the Linux module reads from the BHCN ACPI table,
//! so both guests learn their connections from one encoding.

/// Guest-physical address of the boot information (after the command line at 0x9000).
pub const BOOT_INFO_GPA: u64 = 0xA000;
/// The most bytes it may take: 0xA000..0xC000 of the boot area.
pub const BOOT_INFO_MAX: usize = 0x2000;
/// Bytes 0..8.
pub const MAGIC: [u8; 8] = *b"BHBOOTIN";
/// Layout version; a reader refuses another.
pub const VERSION: u32 = 1;
/// Header length (the arrays start here).
pub const HEADER_LEN: usize = 64;
/// Bytes of one memory region.
pub const MEMORY_ENTRY_LEN: usize = 16;
/// Bytes of one connection (a BHCN entry).
pub const CONNECTION_ENTRY_LEN: usize = 48;
/// The longest partition or connection name.
pub const MAX_NAME: usize = 32;
/// The most vCPUs, memory regions and connections an encoding may hold: together they fit
/// [`BOOT_INFO_MAX`].
pub const MAX_VCPUS: usize = 256;
/// See [`MAX_VCPUS`].
pub const MAX_MEMORY_REGIONS: usize = 8;
/// See [`MAX_VCPUS`].
pub const MAX_CONNECTIONS: usize = 64;

const _: () = assert!(
    HEADER_LEN + 4 * MAX_VCPUS + MEMORY_ENTRY_LEN * MAX_MEMORY_REGIONS + CONNECTION_ENTRY_LEN * MAX_CONNECTIONS
        <= BOOT_INFO_MAX
);

/// Whether a connection carries messages or sets an event flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    /// HvCallPostMessage; `queue_depth` messages may wait at the receiver.
    Message {
        /// The connection's `queue_depth`.
        queue_depth: u16,
    },
    /// HvCallSignalEvent; the receiver's event flag `flag`.
    Event {
        /// The flag number in the receiver's SIEF page slot of the SINT.
        flag: u16,
    },
}

/// One of the partition's connections. Encoding ([`CONNECTION_ENTRY_LEN`] bytes):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | connection ID (TLFS, 24 bits) |
/// | 4 | 1 | kind: 0 message, 1 event |
/// | 5 | 1 | direction: 0 the partition sends, 1 the partition receives |
/// | 6 | 1 | SINT of the receiver |
/// | 7 | 1 | reserved, 0 |
/// | 8 | 2 | event flag (events), else 0 |
/// | 10 | 2 | queue depth (messages), else 0 |
/// | 12 | 4 | reserved, 0 |
/// | 16 | 32 | name, ASCII, NUL-padded (all NUL: the connection has no name) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// The TLFS connection ID.
    pub id: u32,
    /// Message or event.
    pub kind: ConnectionKind,
    /// True when the partition receives on it, false when it sends.
    pub incoming: bool,
    /// The receiver's SINT.
    pub sint: u8,
    /// The name from the system file, NUL-padded (all NUL: none).
    pub name: [u8; MAX_NAME],
}

impl Connection {
    /// The name, if it has one (bytes up to the first NUL; `None` if empty or not UTF-8).
    pub fn name(&self) -> Option<&str> {
        name_str(&self.name)
    }

    /// Writes the entry into `out` (at least [`CONNECTION_ENTRY_LEN`] bytes).
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..CONNECTION_ENTRY_LEN];
        out.fill(0);
        out[0..4].copy_from_slice(&self.id.to_le_bytes());
        let (kind, flag, depth) = match self.kind {
            ConnectionKind::Message { queue_depth } => (0u8, 0u16, queue_depth),
            ConnectionKind::Event { flag } => (1, flag, 0),
        };
        out[4] = kind;
        out[5] = u8::from(self.incoming);
        out[6] = self.sint;
        out[8..10].copy_from_slice(&flag.to_le_bytes());
        out[10..12].copy_from_slice(&depth.to_le_bytes());
        out[16..16 + MAX_NAME].copy_from_slice(&self.name);
    }

    /// Reads an entry; `None` for an unknown kind or direction.
    pub fn decode(entry: &[u8]) -> Option<Self> {
        let entry = entry.get(..CONNECTION_ENTRY_LEN)?;
        let flag = u16::from_le_bytes([entry[8], entry[9]]);
        let depth = u16::from_le_bytes([entry[10], entry[11]]);
        let kind = match entry[4] {
            0 => ConnectionKind::Message { queue_depth: depth },
            1 => ConnectionKind::Event { flag },
            _ => return None,
        };
        let incoming = match entry[5] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let mut name = [0u8; MAX_NAME];
        name.copy_from_slice(&entry[16..16 + MAX_NAME]);
        Some(Self {
            id: u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]),
            kind,
            incoming,
            sint: entry[6],
            name,
        })
    }
}

/// A NUL-padded name field as a string (`None` if empty or not UTF-8).
fn name_str(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    core::str::from_utf8(&field[..end]).ok().filter(|s| !s.is_empty())
}

/// A name as a NUL-padded field (cut at [`MAX_NAME`] bytes).
pub fn name_field(name: &str) -> [u8; MAX_NAME] {
    let mut field = [0u8; MAX_NAME];
    let n = name.len().min(MAX_NAME);
    field[..n].copy_from_slice(&name.as_bytes()[..n]);
    field
}

/// One region of the partition's memory, guest-physical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// Why an encoding could not be written or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootInfoError {
    /// More vCPUs, regions or connections than the limits above, or a buffer too small.
    TooLarge,
    /// Not [`MAGIC`].
    BadMagic,
    /// Another [`VERSION`].
    BadVersion(u32),
    /// The length or counts do not fit the bytes given, or an entry is malformed.
    Malformed,
}

const fn vcpus_len(n: usize) -> usize {
    (4 * n + 7) & !7
}

/// Bytes an encoding of these counts takes.
pub const fn encoded_len(vcpus: usize, regions: usize, connections: usize) -> usize {
    HEADER_LEN + vcpus_len(vcpus) + MEMORY_ENTRY_LEN * regions + CONNECTION_ENTRY_LEN * connections
}

/// Writes the boot information into `out`; returns the bytes written.
pub fn encode(
    out: &mut [u8],
    name: &str,
    apic_ids: &[u32],
    memory: &[MemoryRegion],
    connections: &[Connection],
) -> Result<usize, BootInfoError> {
    if apic_ids.len() > MAX_VCPUS || memory.len() > MAX_MEMORY_REGIONS || connections.len() > MAX_CONNECTIONS {
        return Err(BootInfoError::TooLarge);
    }
    let len = encoded_len(apic_ids.len(), memory.len(), connections.len());
    let out = out.get_mut(..len).ok_or(BootInfoError::TooLarge)?;
    out.fill(0);
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    out[16..20].copy_from_slice(&(apic_ids.len() as u32).to_le_bytes());
    out[20..24].copy_from_slice(&(memory.len() as u32).to_le_bytes());
    out[24..28].copy_from_slice(&(connections.len() as u32).to_le_bytes());
    out[32..32 + MAX_NAME].copy_from_slice(&name_field(name));
    let mut at = HEADER_LEN;
    for id in apic_ids {
        out[at..at + 4].copy_from_slice(&id.to_le_bytes());
        at += 4;
    }
    at = HEADER_LEN + vcpus_len(apic_ids.len());
    for region in memory {
        out[at..at + 8].copy_from_slice(&region.base.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&region.size.to_le_bytes());
        at += MEMORY_ENTRY_LEN;
    }
    for c in connections {
        c.encode(&mut out[at..]);
        at += CONNECTION_ENTRY_LEN;
    }
    Ok(len)
}

/// A boot information block as read back; the arrays stay in the bytes it was read from.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo<'a> {
    bytes: &'a [u8],
    vcpus: usize,
    regions: usize,
    connections: usize,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

impl<'a> BootInfo<'a> {
    /// Checks and reads an encoding (`bytes` may be longer than it).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BootInfoError> {
        if bytes.len() < HEADER_LEN {
            return Err(BootInfoError::Malformed);
        }
        if bytes[0..8] != MAGIC {
            return Err(BootInfoError::BadMagic);
        }
        let version = u32_at(bytes, 8);
        if version != VERSION {
            return Err(BootInfoError::BadVersion(version));
        }
        let len = u32_at(bytes, 12) as usize;
        let (vcpus, regions, connections) =
            (u32_at(bytes, 16) as usize, u32_at(bytes, 20) as usize, u32_at(bytes, 24) as usize);
        if vcpus > MAX_VCPUS
            || regions > MAX_MEMORY_REGIONS
            || connections > MAX_CONNECTIONS
            || len != encoded_len(vcpus, regions, connections)
            || len > bytes.len()
        {
            return Err(BootInfoError::Malformed);
        }
        let info = Self { bytes: &bytes[..len], vcpus, regions, connections };
        if info.connections().any(|c| c.is_none()) {
            return Err(BootInfoError::Malformed);
        }
        Ok(info)
    }

    /// The partition's name.
    pub fn name(&self) -> &'a str {
        name_str(&self.bytes[32..32 + MAX_NAME]).unwrap_or("")
    }

    /// How many vCPUs the partition has.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus
    }

    /// The APIC ID of the vCPU with this VP index.
    pub fn apic_id(&self, vp_index: usize) -> Option<u32> {
        (vp_index < self.vcpus).then(|| u32_at(self.bytes, HEADER_LEN + 4 * vp_index))
    }

    /// The memory regions, ascending.
    pub fn memory(&self) -> impl Iterator<Item = MemoryRegion> + 'a {
        let bytes = self.bytes;
        let start = HEADER_LEN + vcpus_len(self.vcpus);
        (0..self.regions).map(move |i| {
            let at = start + i * MEMORY_ENTRY_LEN;
            MemoryRegion { base: u64_at(bytes, at), size: u64_at(bytes, at + 8) }
        })
    }

    /// The connections (`None` for a malformed entry, which [`BootInfo::parse`] refuses).
    fn connections(&self) -> impl Iterator<Item = Option<Connection>> + 'a {
        let bytes = self.bytes;
        let start = HEADER_LEN + vcpus_len(self.vcpus) + MEMORY_ENTRY_LEN * self.regions;
        (0..self.connections).map(move |i| Connection::decode(&bytes[start + i * CONNECTION_ENTRY_LEN..]))
    }

    /// The partition's connections, as the system file declares them.
    pub fn connection_list(&self) -> impl Iterator<Item = Connection> + 'a {
        self.connections().flatten()
    }

    /// The connection of this name.
    pub fn connection(&self, name: &str) -> Option<Connection> {
        self.connection_list().find(|c| c.name() == Some(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(out: &mut [u8]) -> usize {
        let connections = [
            Connection {
                id: 11,
                kind: ConnectionKind::Message { queue_depth: 8 },
                incoming: false,
                sint: 2,
                name: name_field("to-control"),
            },
            Connection {
                id: 13,
                kind: ConnectionKind::Event { flag: 5 },
                incoming: true,
                sint: 3,
                name: [0; MAX_NAME],
            },
        ];
        let memory = [MemoryRegion { base: 0, size: 0x20_0000 }, MemoryRegion { base: 0x20_0000, size: 0x800_0000 }];
        encode(out, "control", &[0, 1, 4], &memory, &connections).unwrap()
    }

    #[test]
    fn round_trip() {
        let mut buf = [0u8; BOOT_INFO_MAX];
        let len = sample(&mut buf);
        assert_eq!(len, encoded_len(3, 2, 2));
        let info = BootInfo::parse(&buf).unwrap();
        assert_eq!(info.name(), "control");
        assert_eq!(info.vcpu_count(), 3);
        assert_eq!((info.apic_id(0), info.apic_id(2), info.apic_id(3)), (Some(0), Some(4), None));
        let memory: [MemoryRegion; 2] = core::array::from_fn(|i| info.memory().nth(i).unwrap());
        assert_eq!(memory[1], MemoryRegion { base: 0x20_0000, size: 0x800_0000 });
        let c = info.connection("to-control").unwrap();
        assert_eq!((c.id, c.kind, c.incoming, c.sint), (11, ConnectionKind::Message { queue_depth: 8 }, false, 2));
        assert_eq!(info.connection_list().count(), 2);
        assert_eq!(info.connection_list().nth(1).unwrap().name(), None);
    }

    #[test]
    fn connection_entry_layout_matches_the_bhcn_table() {
        let mut e = [0xAAu8; CONNECTION_ENTRY_LEN];
        Connection {
            id: 0x12_3456,
            kind: ConnectionKind::Event { flag: 7 },
            incoming: true,
            sint: 3,
            name: name_field("ev"),
        }
        .encode(&mut e);
        assert_eq!(&e[0..4], &[0x56, 0x34, 0x12, 0]);
        assert_eq!(&e[4..12], &[1, 1, 3, 0, 7, 0, 0, 0]);
        assert_eq!(&e[12..18], &[0, 0, 0, 0, b'e', b'v']);
        assert!(e[18..].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_what_is_not_a_boot_info() {
        let mut buf = [0u8; BOOT_INFO_MAX];
        sample(&mut buf);
        let mut bad = buf;
        bad[0] = b'X';
        assert_eq!(BootInfo::parse(&bad).unwrap_err(), BootInfoError::BadMagic);
        let mut bad = buf;
        bad[8] = 2;
        assert_eq!(BootInfo::parse(&bad).unwrap_err(), BootInfoError::BadVersion(2));
        let mut bad = buf;
        bad[16] = 5; // two more vCPUs than the length allows
        assert_eq!(BootInfo::parse(&bad).unwrap_err(), BootInfoError::Malformed);
        let len = encoded_len(3, 2, 2);
        let conn = len - CONNECTION_ENTRY_LEN;
        let mut bad = buf;
        bad[conn + 4] = 9; // unknown kind
        assert_eq!(BootInfo::parse(&bad).unwrap_err(), BootInfoError::Malformed);
        assert_eq!(BootInfo::parse(&buf[..len - 1]).unwrap_err(), BootInfoError::Malformed);
        assert_eq!(encode(&mut [0u8; 64], "x", &[0; MAX_VCPUS + 1], &[], &[]).unwrap_err(), BootInfoError::TooLarge);
    }
}
