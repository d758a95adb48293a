// SPDX-License-Identifier: GPL-2.0
/*
 * bulkhead_msg: the Hyper-V connections of a Bulkhead partition as character devices.
 *
 * The hypervisor lists the partition's connections (those it sends and those it receives
 * on) in an OEM ACPI table, "BHCN" (layout: virt/src/acpi.rs, ConnectionEntry). Each one
 * becomes a misc device /dev/bulkhead/NAME (sysfs: /sys/class/misc/bulkhead-NAME):
 *
 *   outgoing message connection: write() = HvCallPostMessage (TLFS 11.10.1), one message
 *       of at most 240 bytes per write; a full queue at the receiver
 *       (HV_STATUS_INSUFFICIENT_BUFFERS) is retried with a backoff, or -EAGAIN with
 *       O_NONBLOCK; every retry is counted (sysfs "retries").
 *   incoming message connection: read() = the next message received on its SINT (one
 *       message per read), poll() = POLLIN while one waits.
 *   outgoing event connection: write() = HvCallSignalEvent (fast form, flag 0).
 *   incoming event connection: read() = 8 bytes, the number of signals seen since the
 *       last read (at least 1; signals coalesce while the flag stays set), poll() = POLLIN.
 *
 * The hypervisor delivers every connection of a partition to its VP 0 (Linux's CPU 0), so
 * the SynIC (SIMP, SIEFP, SCONTROL, the SINTs, EOM) is enabled on CPU 0 only; the SINTs
 * use Linux's HYPERVISOR_CALLBACK_VECTOR, whose handler this module installs with
 * hv_setup_vmbus_handler() (hv_vmbus does not load without an ACPI VMBus device, and the
 * two cannot be loaded together). The hypercalls go through Linux's hypercall page
 * (hv_hypercall_pg) with the per-CPU input page (hyperv_pcpu_input_arg).
 *
 * Supervision (docs/supervision.md, "From Linux"; the calls: abi/src/supervision.rs): the
 * module reads the partition's own status (BULKHEAD_PARTITION_STATUS). When it has a
 * watchdog, a standard Linux watchdog device (/dev/watchdogN) checks in with the hypervisor
 * (BULKHEAD_WATCHDOG_CHECK_IN) on every ping; /dev/bulkhead/self reads the partition's own
 * status, and /dev/bulkhead/supervisor (only in the supervisor) reads and controls the
 * partitions it supervises (ioctls below). A partition without connections has no BHCN
 * table: the module then loads for supervision alone.
 *
 * Documentation: docs/linux.md, "Messaging with the real-time partition" and "Supervision".
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/acpi.h>
#include <linux/atomic.h>
#include <linux/ctype.h>
#include <linux/delay.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/wait.h>
#include <linux/watchdog.h>
#include <asm/unaligned.h>
#include <asm/hyperv-tlfs.h>
#include <asm/irq_vectors.h>
#include <asm/mshyperv.h>

#define BHCN_SIGNATURE "BHCN"
#define BHCN_REVISION 1
#define BHCN_ENTRY_LEN 48
#define BHCN_NAME_LEN 32

#define KIND_MESSAGE 0
#define KIND_EVENT 1

/* The message type this module posts (any type but 0 and the hypervisor range). */
#define BH_MESSAGE_TYPE 1
#define BH_MAX_PAYLOAD HV_MESSAGE_PAYLOAD_BYTE_COUNT
/* Messages a connection's receive ring holds; beyond, the SIMP slot stays occupied and the
 * hypervisor's queue fills (back-pressure to the sender, never a dropped message). */
#define BH_RING 64
/* HV_STATUS_INVALID_SYNIC_STATE: the receiver's SynIC is not ready (docs/hyperv.md). */
#define BH_STATUS_INVALID_SYNIC_STATE 0x18
/* The CPU every connection of the partition is delivered to (VP 0). */
#define BH_CPU 0

/* Supervision calls (abi/src/hyperv/hypercall.rs, `code`) and their status codes. */
#define BH_CALL_WATCHDOG_CHECK_IN 0x8002
#define BH_CALL_PARTITION_STATUS 0x8003
#define BH_CALL_PARTITION_CONTROL 0x8004
#define BH_STATUS_INVALID_PARTITION_STATE 0x07
#define BH_STATUS_INVALID_PARTITION_ID 0x0D
/* BULKHEAD_PARTITION_STATUS: an 8-byte input block {u32 id, u32 0}, then the 256-byte
 * PartitionStatus; the fields the module reads, at their offsets. */
#define BH_STATUS_INPUT_LEN 8
#define BH_STATUS_LEN 256
#define BH_STATUS_ID 1
#define BH_STATUS_FLAGS 3
#define BH_STATUS_NAME 8
#define BH_STATUS_NAME_LEN 32
#define BH_STATUS_WATCHDOG_MS 40
#define BH_FLAG_WATCHDOG BIT(0)
#define BH_FLAG_SUPERVISOR BIT(2)

/*
 * The ioctls of /dev/bulkhead/self and /dev/bulkhead/supervisor (mirrored by
 * linux/msg-tool/src/supervise.rs). STATUS: in `id` (BH_SELF: the partition's own), out
 * the PartitionStatus block as the hypervisor wrote it (its byte 1 is the id read).
 * CONTROL: `action` 1 restart, 2 halt (abi ControlAction); the supervisor device only.
 * The hypervisor decides what may be read and controlled; its refusals come back as
 * errnos (status_to_errno).
 */
struct bh_status_arg {
	u32 id;
	u32 reserved;
	u8 status[BH_STATUS_LEN];
};

struct bh_control_arg {
	u32 id;
	u32 action;
};

/* PARTITION_SELF (abi/src/supervision.rs): the caller's own status. */
#define BH_SELF 0xffffffffu
#define BH_IOC_MAGIC 0xb4
#define BH_IOC_STATUS _IOWR(BH_IOC_MAGIC, 1, struct bh_status_arg)
#define BH_IOC_CONTROL _IOW(BH_IOC_MAGIC, 2, struct bh_control_arg)

/* One BHCN entry (virt/src/acpi.rs, ConnectionEntry). */
struct bhcn_entry {
	u32 id;
	u8 kind;
	u8 incoming;
	u8 sint;
	u8 reserved0;
	u16 flag;
	u16 queue_depth;
	u32 reserved1;
	char name[BHCN_NAME_LEN];
} __packed;

/* HvCallPostMessage input (TLFS: HV_INPUT_POST_MESSAGE). */
struct bh_post_input {
	u32 connection_id;
	u32 reserved;
	u32 message_type;
	u32 payload_size;
	u64 payload[HV_MESSAGE_PAYLOAD_QWORD_COUNT];
} __packed;

struct bh_msg {
	u8 size;
	u8 data[BH_MAX_PAYLOAD];
};

struct bh_conn {
	struct miscdevice misc;
	char devname[BHCN_NAME_LEN + 16];
	char nodename[BHCN_NAME_LEN + 16];
	char name[BHCN_NAME_LEN + 1];
	u32 id;
	u8 kind;
	bool incoming;
	u8 sint;
	u16 flag;
	u16 queue_depth;

	spinlock_t lock;
	wait_queue_head_t wait;
	struct bh_msg *ring; /* incoming messages: BH_RING entries */
	unsigned int head, tail;
	u64 events; /* incoming events not yet read */

	atomic64_t sent;
	atomic64_t received;
	atomic64_t retries;
	atomic64_t refused;
};

static struct bh_conn *conns;
static unsigned int nconns;
static u16 sints_used;
/* SINTs whose slot was left occupied because a ring was full. */
static unsigned long sints_stalled;
static struct hv_message_page *simp;
static void *siefp;
static atomic64_t dropped; /* messages for no known incoming connection */

static bool ring_full(const struct bh_conn *c)
{
	return c->head - c->tail >= BH_RING;
}

static bool ring_empty(const struct bh_conn *c)
{
	return c->head == c->tail;
}

static struct bh_conn *incoming_message_conn(u32 id, u8 sint)
{
	unsigned int i;

	for (i = 0; i < nconns; i++) {
		struct bh_conn *c = &conns[i];

		if (c->incoming && c->kind == KIND_MESSAGE && c->id == id && c->sint == sint)
			return c;
	}
	return NULL;
}

/*
 * Frees a SIMP slot as the TLFS (11.9.3, "Message Buffers") asks: clear the type with a
 * full barrier, then write EOM only if the hypervisor marked more messages pending, so
 * that it delivers the next one into the slot.
 */
static void free_slot(struct hv_message *msg)
{
	xchg(&msg->header.message_type, HVMSG_NONE);
	if (READ_ONCE(msg->header.message_flags.asu8) & 1)
		wrmsrl(HV_X64_MSR_EOM, 0);
}

/* Takes the messages in the slot of `sint` while the receiving ring has room. */
static void scan_messages(u8 sint)
{
	struct hv_message *msg = &simp->sint_message[sint];
	int budget = BH_RING;

	while (budget-- > 0 && READ_ONCE(msg->header.message_type) != HVMSG_NONE) {
		u32 id = msg->header.port.u.id;
		struct bh_conn *c = incoming_message_conn(id, sint);
		u8 size = min_t(u8, msg->header.payload_size, BH_MAX_PAYLOAD);

		virt_rmb(); /* the payload after the type */
		if (!c) {
			atomic64_inc(&dropped);
			pr_warn_ratelimited("message from unknown connection %#x on SINT %u dropped\n", id, sint);
			free_slot(msg);
			continue;
		}
		spin_lock(&c->lock);
		if (ring_full(c)) {
			set_bit(sint, &sints_stalled);
			spin_unlock(&c->lock);
			return;
		}
		c->ring[c->head % BH_RING].size = size;
		memcpy(c->ring[c->head % BH_RING].data, msg->u.payload, size);
		c->head++;
		spin_unlock(&c->lock);
		atomic64_inc(&c->received);
		wake_up_interruptible(&c->wait);
		free_slot(msg);
	}
}

/* Collects the event flags set on `sint` (SIEF page: one 256-byte slot per SINT). */
static void scan_events(u8 sint)
{
	unsigned long *flags = siefp + sint * HV_EVENT_FLAGS_COUNT / 8;
	unsigned int i;

	for (i = 0; i < nconns; i++) {
		struct bh_conn *c = &conns[i];

		if (!c->incoming || c->kind != KIND_EVENT || c->sint != sint)
			continue;
		if (test_and_clear_bit(c->flag, flags)) {
			spin_lock(&c->lock);
			c->events++;
			spin_unlock(&c->lock);
			atomic64_inc(&c->received);
			wake_up_interruptible(&c->wait);
		}
	}
}

/* The SINT interrupt on CPU 0 (HYPERVISOR_CALLBACK_VECTOR; the caller EOIs the APIC). */
static void bh_isr(void)
{
	unsigned int sint;

	if (smp_processor_id() != BH_CPU)
		return;
	for (sint = 0; sint < HV_SYNIC_SINT_COUNT; sint++) {
		if (!(sints_used & BIT(sint)))
			continue;
		scan_messages(sint);
		scan_events(sint);
	}
}

static void bh_rescan(void *unused)
{
	unsigned long flags;

	local_irq_save(flags);
	bh_isr();
	local_irq_restore(flags);
}

static int status_to_errno(u16 status)
{
	switch (status) {
	case HV_STATUS_SUCCESS:
		return 0;
	case HV_STATUS_INSUFFICIENT_BUFFERS:
		return -EAGAIN;
	case BH_STATUS_INVALID_SYNIC_STATE:
		return -ENOTCONN;
	case HV_STATUS_ACCESS_DENIED:
		return -EACCES;
	case HV_STATUS_INVALID_CONNECTION_ID:
	case HV_STATUS_INVALID_PORT_ID:
		return -ENXIO;
	case HV_STATUS_INVALID_PARAMETER:
	case HV_STATUS_INVALID_HYPERCALL_INPUT:
		return -EINVAL;
	case HV_STATUS_INVALID_ALIGNMENT:
		return -EFAULT;
	case HV_STATUS_INVALID_HYPERCALL_CODE:
		return -EOPNOTSUPP;
	case HV_STATUS_INSUFFICIENT_MEMORY:
		return -ENOMEM;
	case BH_STATUS_INVALID_PARTITION_ID:
		return -ENOENT;
	case BH_STATUS_INVALID_PARTITION_STATE:
		return -EBUSY;
	default:
		return -EIO;
	}
}

static u16 post_message(u32 id, const u8 *data, size_t size)
{
	struct bh_post_input *input;
	unsigned long flags;
	u64 status;

	/* The per-CPU input page is shared with Linux's other hypercalls, which may run in
	 * interrupts: fill and use it with interrupts off. */
	local_irq_save(flags);
	input = *this_cpu_ptr(hyperv_pcpu_input_arg);
	if (!input) {
		/* Linux allocates the page when it brings the CPU up; never seen missing. */
		local_irq_restore(flags);
		return HV_STATUS_INSUFFICIENT_MEMORY;
	}
	input->connection_id = id;
	input->reserved = 0;
	input->message_type = BH_MESSAGE_TYPE;
	input->payload_size = size;
	memset(input->payload, 0, sizeof(input->payload));
	memcpy(input->payload, data, size);
	status = hv_do_hypercall(HVCALL_POST_MESSAGE, input, NULL);
	local_irq_restore(flags);
	return status & HV_HYPERCALL_RESULT_MASK;
}

static ssize_t write_message(struct bh_conn *c, struct file *file, const char __user *buf, size_t count)
{
	u8 data[BH_MAX_PAYLOAD];
	unsigned int attempt = 0;

	if (count > BH_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (copy_from_user(data, buf, count))
		return -EFAULT;
	for (;;) {
		u16 status = post_message(c->id, data, count);

		if (status != HV_STATUS_INSUFFICIENT_BUFFERS) {
			int err = status_to_errno(status);

			if (err)
				return err;
			atomic64_inc(&c->sent);
			return count;
		}
		/* The receiver's queue is full: it has not taken the earlier messages yet. */
		if (file->f_flags & O_NONBLOCK) {
			atomic64_inc(&c->refused);
			return -EAGAIN;
		}
		if (signal_pending(current))
			return -ERESTARTSYS;
		atomic64_inc(&c->retries);
		/* Back off: spin briefly first (the receiver usually frees a slot within
		 * microseconds), then sleep up to a millisecond. */
		if (attempt < 8)
			udelay(2 << attempt);
		else
			usleep_range(500, 1000);
		attempt++;
	}
}

static ssize_t bh_write(struct file *file, const char __user *buf, size_t count, loff_t *ppos)
{
	struct bh_conn *c = container_of(file->private_data, struct bh_conn, misc);
	int err;

	if (c->incoming)
		return -EINVAL;
	if (c->kind == KIND_MESSAGE)
		return write_message(c, file, buf, count);
	/* HvCallSignalEvent, fast form: the connection ID and flag number 0 (TLFS 11.10.2). */
	err = status_to_errno(hv_do_fast_hypercall8(HVCALL_SIGNAL_EVENT, c->id) & HV_HYPERCALL_RESULT_MASK);
	if (err)
		return err;
	atomic64_inc(&c->sent);
	return count;
}

static ssize_t read_message(struct bh_conn *c, struct file *file, char __user *buf, size_t count)
{
	struct bh_msg m;
	bool stalled;
	int err;

	for (;;) {
		spin_lock_irq(&c->lock);
		if (!ring_empty(c))
			break;
		spin_unlock_irq(&c->lock);
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		err = wait_event_interruptible(c->wait, !ring_empty(c));
		if (err)
			return err;
	}
	m = c->ring[c->tail % BH_RING];
	if (m.size > count) {
		spin_unlock_irq(&c->lock);
		return -EMSGSIZE;
	}
	c->tail++;
	spin_unlock_irq(&c->lock);
	stalled = test_and_clear_bit(c->sint, &sints_stalled);
	if (stalled)
		/* The ring has room again: take what waits in the slot (on CPU 0, whose SIMP
		 * and EOM they are). */
		smp_call_function_single(BH_CPU, bh_rescan, NULL, 1);
	return copy_to_user(buf, m.data, m.size) ? -EFAULT : m.size;
}

static ssize_t bh_read(struct file *file, char __user *buf, size_t count, loff_t *ppos)
{
	struct bh_conn *c = container_of(file->private_data, struct bh_conn, misc);
	u64 n;
	int err;

	if (!c->incoming)
		return -EINVAL;
	if (c->kind == KIND_MESSAGE)
		return read_message(c, file, buf, count);
	if (count < sizeof(n))
		return -EINVAL;
	for (;;) {
		spin_lock_irq(&c->lock);
		n = c->events;
		c->events = 0;
		spin_unlock_irq(&c->lock);
		if (n)
			break;
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		err = wait_event_interruptible(c->wait, READ_ONCE(c->events) != 0);
		if (err)
			return err;
	}
	if (copy_to_user(buf, &n, sizeof(n)))
		return -EFAULT;
	return sizeof(n);
}

static __poll_t bh_poll(struct file *file, poll_table *wait)
{
	struct bh_conn *c = container_of(file->private_data, struct bh_conn, misc);
	__poll_t mask = 0;

	if (!c->incoming)
		return EPOLLOUT | EPOLLWRNORM;
	poll_wait(file, &c->wait, wait);
	spin_lock_irq(&c->lock);
	if (c->kind == KIND_MESSAGE ? !ring_empty(c) : c->events != 0)
		mask |= EPOLLIN | EPOLLRDNORM;
	spin_unlock_irq(&c->lock);
	return mask;
}

static const struct file_operations bh_fops = {
	.owner = THIS_MODULE,
	.read = bh_read,
	.write = bh_write,
	.poll = bh_poll,
	.llseek = noop_llseek,
};

/* sysfs: /sys/class/misc/bulkhead-NAME/{id,kind,direction,sint,flag,queue_depth,
 * sent,received,retries,refused}. */
static struct bh_conn *dev_conn(struct device *dev)
{
	return container_of((struct miscdevice *)dev_get_drvdata(dev), struct bh_conn, misc);
}

#define BH_ATTR(field, fmt, expr)                                                        \
	static ssize_t field##_show(struct device *dev, struct device_attribute *attr,   \
				    char *buf)                                           \
	{                                                                                \
		struct bh_conn *c = dev_conn(dev);                                       \
		return sysfs_emit(buf, fmt "\n", expr);                                  \
	}                                                                                \
	static DEVICE_ATTR_RO(field)

BH_ATTR(id, "%#x", c->id);
BH_ATTR(kind, "%s", c->kind == KIND_MESSAGE ? "message" : "event");
BH_ATTR(direction, "%s", c->incoming ? "in" : "out");
BH_ATTR(sint, "%u", c->sint);
BH_ATTR(flag, "%u", c->flag);
BH_ATTR(queue_depth, "%u", c->queue_depth);
BH_ATTR(sent, "%lld", atomic64_read(&c->sent));
BH_ATTR(received, "%lld", atomic64_read(&c->received));
BH_ATTR(retries, "%lld", atomic64_read(&c->retries));
BH_ATTR(refused, "%lld", atomic64_read(&c->refused));

static struct attribute *bh_attrs[] = {
	&dev_attr_id.attr,	 &dev_attr_kind.attr,	 &dev_attr_direction.attr,
	&dev_attr_sint.attr,	 &dev_attr_flag.attr,	 &dev_attr_queue_depth.attr,
	&dev_attr_sent.attr,	 &dev_attr_received.attr, &dev_attr_retries.attr,
	&dev_attr_refused.attr, NULL,
};
ATTRIBUTE_GROUPS(bh);

/* SynIC on CPU 0 (TLFS 11.8): message and event flag pages, the SINTs, then SCONTROL. */
static void synic_enable(void *unused)
{
	unsigned int sint;

	wrmsrl(HV_X64_MSR_SIMP, virt_to_phys(simp) | 1);
	wrmsrl(HV_X64_MSR_SIEFP, virt_to_phys(siefp) | 1);
	for (sint = 0; sint < HV_SYNIC_SINT_COUNT; sint++)
		if (sints_used & BIT(sint))
			wrmsrl(HV_X64_MSR_SINT0 + sint, HYPERVISOR_CALLBACK_VECTOR);
	wrmsrl(HV_X64_MSR_SCONTROL, 1);
}

static void synic_disable(void *unused)
{
	unsigned int sint;

	for (sint = 0; sint < HV_SYNIC_SINT_COUNT; sint++)
		if (sints_used & BIT(sint))
			wrmsrl(HV_X64_MSR_SINT0 + sint, HV_SYNIC_SINT_MASKED);
	wrmsrl(HV_X64_MSR_SCONTROL, 0);
	wrmsrl(HV_X64_MSR_SIEFP, 0);
	wrmsrl(HV_X64_MSR_SIMP, 0);
}

static void synic_in_use(void *result)
{
	u64 v;

	rdmsrl(HV_X64_MSR_SCONTROL, v);
	*(bool *)result = v & 1;
}

static bool valid_name(const char *name)
{
	const char *p;

	if (!*name)
		return false;
	for (p = name; *p; p++)
		if (!(islower(*p) || isdigit(*p) || *p == '-' || *p == '_'))
			return false;
	return true;
}

/* Reads the BHCN table into `conns`. */
static int read_connections(void)
{
	struct acpi_table_header *table;
	const struct bhcn_entry *e;
	acpi_status st;
	unsigned int i;

	st = acpi_get_table(BHCN_SIGNATURE, 0, &table);
	if (ACPI_FAILURE(st)) {
		/* Not a Bulkhead partition, or one without connections. */
		nconns = 0;
		return 0;
	}
	if (table->revision != BHCN_REVISION || table->length < sizeof(*table) ||
	    (table->length - sizeof(*table)) % BHCN_ENTRY_LEN) {
		pr_err("BHCN table revision %u, length %u: not understood\n", table->revision, table->length);
		acpi_put_table(table);
		return -EINVAL;
	}
	nconns = (table->length - sizeof(*table)) / BHCN_ENTRY_LEN;
	conns = kcalloc(nconns, sizeof(*conns), GFP_KERNEL);
	if (!conns) {
		acpi_put_table(table);
		return -ENOMEM;
	}
	e = (const void *)(table + 1);
	for (i = 0; i < nconns; i++, e++) {
		struct bh_conn *c = &conns[i];

		c->id = e->id;
		c->kind = e->kind;
		c->incoming = e->incoming;
		c->sint = e->sint & 15;
		c->flag = e->flag;
		c->queue_depth = e->queue_depth;
		memcpy(c->name, e->name, BHCN_NAME_LEN);
		c->name[BHCN_NAME_LEN] = 0;
		if (!valid_name(c->name))
			snprintf(c->name, sizeof(c->name), "conn-%u", c->id);
		spin_lock_init(&c->lock);
		init_waitqueue_head(&c->wait);
		if (c->incoming)
			sints_used |= BIT(c->sint);
	}
	acpi_put_table(table);
	return 0;
}

static void unregister_devices(void)
{
	unsigned int i;

	for (i = 0; i < nconns; i++) {
		if (conns[i].misc.fops)
			misc_deregister(&conns[i].misc);
		kfree(conns[i].ring);
	}
}

/* Supervision. */

/* The partition's own id and status as read at load, the devices made from them. */
static u32 self_id = BH_SELF;
static u8 self_status[BH_STATUS_LEN];
static bool self_registered, supervisor_registered, wdt_registered;
/* watchdog_register_device/watchdog_unregister_device of the watchdog core, looked up
 * with symbol_get so that the module loads without the core (Debian builds it as a
 * module, watchdog.ko: then load that first for a watchdog device). */
static int (*wdt_register)(struct watchdog_device *);
static void (*wdt_unregister)(struct watchdog_device *);

static u32 status_u32(const u8 *status, unsigned int at)
{
	return get_unaligned_le32(status + at);
}

/* BULKHEAD_PARTITION_STATUS of partition `id` into `out` (BH_STATUS_LEN bytes). */
static u16 partition_status(u32 id, u8 *out)
{
	unsigned long flags;
	u8 *page;
	u16 status;

	/* The per-CPU input page holds both blocks (the call allows the output block in the
	 * input's page when they do not overlap); interrupts off as in post_message(). */
	local_irq_save(flags);
	page = *this_cpu_ptr(hyperv_pcpu_input_arg);
	if (!page) {
		local_irq_restore(flags);
		return HV_STATUS_INSUFFICIENT_MEMORY;
	}
	memset(page, 0, BH_STATUS_INPUT_LEN + BH_STATUS_LEN);
	put_unaligned_le32(id, page);
	status = hv_do_hypercall(BH_CALL_PARTITION_STATUS, page, page + BH_STATUS_INPUT_LEN) &
		 HV_HYPERCALL_RESULT_MASK;
	if (status == HV_STATUS_SUCCESS)
		memcpy(out, page + BH_STATUS_INPUT_LEN, BH_STATUS_LEN);
	local_irq_restore(flags);
	return status;
}

/*
 * Reads the partition's own status, and from it its id (neither the BHCN table, absent
 * without connections, nor the boot parameters carry it): PARTITION_SELF names the caller.
 */
static int read_self(void)
{
	u16 st = partition_status(BH_SELF, self_status);

	/* INVALID_HYPERCALL_CODE: a hypervisor without supervision. */
	if (st != HV_STATUS_SUCCESS)
		return status_to_errno(st);
	self_id = self_status[BH_STATUS_ID];
	return 0;
}

static int wdt_ping(struct watchdog_device *wdd)
{
	/* The fast form with RDX = R8 = 0 (hv_do_fast_hypercall8 leaves R8 unset). */
	return status_to_errno(hv_do_fast_hypercall16(BH_CALL_WATCHDOG_CHECK_IN, 0, 0) & HV_HYPERCALL_RESULT_MASK);
}

static int wdt_start(struct watchdog_device *wdd)
{
	return wdt_ping(wdd);
}

/* The hypervisor's watchdog cannot be stopped: stopping only ends the check-ins, and the
 * partition faults at its next deadline. With nowayout set the core never calls this. */
static int wdt_stop(struct watchdog_device *wdd)
{
	return 0;
}

static const struct watchdog_info wdt_info = {
	.options = WDIOF_KEEPALIVEPING | WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE,
	.identity = "Bulkhead partition watchdog",
};

static const struct watchdog_ops wdt_ops = {
	.owner = THIS_MODULE,
	.start = wdt_start,
	.stop = wdt_stop,
	.ping = wdt_ping,
};

static struct watchdog_device wdt = {
	.info = &wdt_info,
	.ops = &wdt_ops,
	.min_timeout = 1,
};

/*
 * The watchdog device of a partition with a watchdog of `period_ms`. Userspace's timeout
 * (how long after its last ping the partition may live) starts at the period rounded up
 * to seconds; a daemon may set a longer one (WDIOC_SETTIMEOUT). The hypervisor's period
 * is the hardware heartbeat: with max_hw_heartbeat_ms at half the period the core's worker
 * checks in every quarter period between userspace's pings, until the userspace timeout
 * ends, and the partition faults at most half a period later.
 */
static int wdt_init(u32 period_ms)
{
	int err;

	wdt_register = symbol_get(watchdog_register_device);
	wdt_unregister = symbol_get(watchdog_unregister_device);
	if (!wdt_register || !wdt_unregister) {
		pr_warn("the partition has a watchdog of %u ms but the watchdog core is not loaded "
			"(watchdog.ko): no watchdog device\n",
			period_ms);
		err = -ENODEV;
		goto put;
	}
	wdt.timeout = max_t(u32, DIV_ROUND_UP(period_ms, 1000), 1);
	wdt.max_hw_heartbeat_ms = max_t(u32, period_ms / 2, 1);
	watchdog_set_nowayout(&wdt, true);
	err = wdt_register(&wdt);
	if (err) {
		pr_err("cannot register the watchdog device: %d\n", err);
		goto put;
	}
	pr_info("watchdog %u ms: /dev/watchdog%d, timeout %u s, checked in every %u ms by the core\n", period_ms,
		wdt.id, wdt.timeout, wdt.max_hw_heartbeat_ms / 2);
	wdt_registered = true;
	return 0;
put:
	if (wdt_register)
		symbol_put(watchdog_register_device);
	if (wdt_unregister)
		symbol_put(watchdog_unregister_device);
	wdt_register = NULL;
	wdt_unregister = NULL;
	return err;
}

static struct miscdevice self_misc, supervisor_misc;

static long status_ioctl(unsigned long arg)
{
	struct bh_status_arg *a;
	long err;

	a = kzalloc(sizeof(*a), GFP_KERNEL);
	if (!a)
		return -ENOMEM;
	if (copy_from_user(&a->id, (void __user *)arg, sizeof(a->id))) {
		err = -EFAULT;
		goto out;
	}
	err = status_to_errno(partition_status(a->id, a->status));
	if (!err && copy_to_user((void __user *)arg, a, sizeof(*a)))
		err = -EFAULT;
out:
	kfree(a);
	return err;
}

static long sup_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct bh_control_arg c;

	switch (cmd) {
	case BH_IOC_STATUS:
		return status_ioctl(arg);
	case BH_IOC_CONTROL:
		if (file->private_data != &supervisor_misc)
			return -EPERM;
		if (copy_from_user(&c, (void __user *)arg, sizeof(c)))
			return -EFAULT;
		return status_to_errno(hv_do_fast_hypercall16(BH_CALL_PARTITION_CONTROL, c.id, c.action) &
				       HV_HYPERCALL_RESULT_MASK);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations sup_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = sup_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice self_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "bulkhead-self",
	.nodename = "bulkhead/self",
	.mode = 0444,
	.fops = &sup_fops,
};

static struct miscdevice supervisor_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "bulkhead-supervisor",
	.nodename = "bulkhead/supervisor",
	.mode = 0600,
	.fops = &sup_fops,
};

/* Reads the own status and makes the devices it calls for. Not finding the own id (a
 * hypervisor without supervision) leaves supervision out; -ENODEV then. */
static int supervision_init(void)
{
	char name[BH_STATUS_NAME_LEN + 1];
	u8 flags;
	int err;

	err = read_self();
	if (err)
		return -ENODEV;
	flags = self_status[BH_STATUS_FLAGS];
	memcpy(name, self_status + BH_STATUS_NAME, BH_STATUS_NAME_LEN);
	name[BH_STATUS_NAME_LEN] = 0;
	pr_info("partition %u (%s)%s%s\n", self_id, name, flags & BH_FLAG_WATCHDOG ? ", with a watchdog" : "",
		flags & BH_FLAG_SUPERVISOR ? ", supervisor" : "");
	err = misc_register(&self_misc);
	if (err)
		pr_err("cannot register /dev/%s: %d\n", self_misc.nodename, err);
	else
		self_registered = true;
	if (flags & BH_FLAG_SUPERVISOR) {
		err = misc_register(&supervisor_misc);
		if (err)
			pr_err("cannot register /dev/%s: %d\n", supervisor_misc.nodename, err);
		else
			supervisor_registered = true;
	}
	if (flags & BH_FLAG_WATCHDOG)
		wdt_init(status_u32(self_status, BH_STATUS_WATCHDOG_MS));
	return 0;
}

static void supervision_exit(void)
{
	if (wdt_registered) {
		wdt_unregister(&wdt);
		symbol_put(watchdog_register_device);
		symbol_put(watchdog_unregister_device);
	}
	if (supervisor_registered)
		misc_deregister(&supervisor_misc);
	if (self_registered)
		misc_deregister(&self_misc);
}

/* The connections: their devices, the SINT handler, the SynIC of CPU 0. */
static int connections_init(void)
{
	bool in_use = false;
	unsigned int i;
	int err;

	if (!(ms_hyperv.hints & HV_DEPRECATING_AEOI_RECOMMENDED)) {
		/* Linux then leaves the APIC EOI of the callback vector to AutoEOI. */
		pr_err("the hypervisor does not deprecate AutoEOI; not supported\n");
		return -ENODEV;
	}
	smp_call_function_single(BH_CPU, synic_in_use, &in_use, 1);
	if (in_use) {
		pr_err("the SynIC of CPU %d is already enabled (hv_vmbus?)\n", BH_CPU);
		return -EBUSY;
	}
	simp = (void *)get_zeroed_page(GFP_KERNEL);
	siefp = (void *)get_zeroed_page(GFP_KERNEL);
	if (!simp || !siefp) {
		err = -ENOMEM;
		goto free_pages;
	}
	for (i = 0; i < nconns; i++) {
		struct bh_conn *c = &conns[i];

		if (c->incoming && c->kind == KIND_MESSAGE) {
			c->ring = kcalloc(BH_RING, sizeof(*c->ring), GFP_KERNEL);
			if (!c->ring) {
				err = -ENOMEM;
				goto unregister;
			}
		}
		snprintf(c->devname, sizeof(c->devname), "bulkhead-%s", c->name);
		snprintf(c->nodename, sizeof(c->nodename), "bulkhead/%s", c->name);
		c->misc.minor = MISC_DYNAMIC_MINOR;
		c->misc.name = c->devname;
		c->misc.nodename = c->nodename;
		c->misc.mode = 0600;
		c->misc.groups = bh_groups;
		c->misc.fops = &bh_fops;
		err = misc_register(&c->misc);
		if (err) {
			c->misc.fops = NULL;
			pr_err("cannot register /dev/%s: %d\n", c->nodename, err);
			goto unregister;
		}
		if (c->kind == KIND_MESSAGE)
			pr_info("/dev/%s: message connection %#x, %s, SINT %u, queue depth %u\n", c->nodename, c->id,
				c->incoming ? "incoming" : "outgoing", c->sint, c->queue_depth);
		else
			pr_info("/dev/%s: event connection %#x, %s, SINT %u, flag %u\n", c->nodename, c->id,
				c->incoming ? "incoming" : "outgoing", c->sint, c->flag);
	}
	hv_setup_vmbus_handler(bh_isr);
	smp_call_function_single(BH_CPU, synic_enable, NULL, 1);
	pr_info("%u connections; SynIC enabled on CPU %d (VP 0), SINT mask %#x, vector %#x\n", nconns, BH_CPU,
		sints_used, HYPERVISOR_CALLBACK_VECTOR);
	/* Anything delivered before the SINTs were unmasked raised no interrupt. */
	smp_call_function_single(BH_CPU, bh_rescan, NULL, 1);
	return 0;

unregister:
	unregister_devices();
free_pages:
	free_page((unsigned long)simp);
	free_page((unsigned long)siefp);
	return err;
}

static void connections_exit(void)
{
	smp_call_function_single(BH_CPU, synic_disable, NULL, 1);
	hv_remove_vmbus_handler();
	unregister_devices();
	free_page((unsigned long)simp);
	free_page((unsigned long)siefp);
}

static int __init bh_init(void)
{
	bool supervision;
	int err;

	/* The numbers linux/msg-tool/src/supervise.rs uses. */
	BUILD_BUG_ON(sizeof(struct bh_status_arg) != 264 || BH_IOC_STATUS != 0xc108b401u);
	BUILD_BUG_ON(sizeof(struct bh_control_arg) != 8 || BH_IOC_CONTROL != 0x4008b402u);
	if (!hv_hypercall_pg || !hyperv_pcpu_input_arg) {
		pr_err("no Hyper-V hypercall page: not running on a Hyper-V compatible hypervisor\n");
		return -ENODEV;
	}
	err = read_connections();
	if (err)
		return err;
	if (nconns) {
		err = connections_init();
		if (err)
			goto free_conns;
	}
	supervision = !supervision_init();
	if (!nconns && !supervision) {
		pr_err("no BHCN table and no supervision calls: not a Bulkhead partition, or one without "
		       "connections on a hypervisor without supervision\n");
		err = -ENODEV;
		goto free_conns;
	}
	return 0;

free_conns:
	kfree(conns);
	return err;
}

static void __exit bh_exit(void)
{
	supervision_exit();
	if (nconns) {
		connections_exit();
		pr_info("unloaded; SynIC of CPU %d disabled\n", BH_CPU);
	} else {
		pr_info("unloaded\n");
	}
	kfree(conns);
}

module_init(bh_init);
module_exit(bh_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Bulkhead partition connections (Hyper-V SynIC messages and events) as devices");
