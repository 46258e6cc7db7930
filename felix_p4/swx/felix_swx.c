/* SPDX-License-Identifier: Apache-2.0
 *
 * felix_swx: a small C layer over DPDK's SWX pipeline (DPDK 22.11) for Python ctypes.
 *
 * One process has one EAL (DPDK cannot initialise it twice); it may hold several pipelines.
 * Every P4 port is an fd port (the fd is used for both directions: one end of a datagram
 * socketpair, an AF_PACKET socket or a TAP fd). The iospec this layer writes is:
 *   input ports 0..n-1 on the given fds, padded with idle socketpairs up to a power of two
 *   (SWX requires a power-of-two input port count); output ports 0..n-1 on the same fds.
 *   rte_swx_pipeline_build appends a sink as output port n, where `drop` sends packets.
 * Every function reports failure as a negative errno and a one-line message in `err`.
 * Nothing here is thread-safe: one caller thread per pipeline.
 *
 * Staged control-plane changes may concern one table, selector or learner at a time (-EBUSY
 * otherwise): DPDK 22.11's commit rollback is only sound for the object that failed. Rolling
 * back a wildcard/LPM table that had changes staged but was not reached yet frees its live
 * object (use after free), and rolling back a selector makes its shadow copy alias the live
 * object (leak, then double free; fsx_pipeline_free copes with the alias). Member ids are
 * checked here and weights by the Python side before staging, so selector commits do not fail.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_log.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_swx_ctl.h>
#include <rte_swx_pipeline.h>
#include <rte_version.h>

#define FSX_EXPORT __attribute__((visibility("default")))

enum fsx_entry_op {
	FSX_ENTRY_ADD = 0,
	FSX_ENTRY_DELETE = 1,
	FSX_ENTRY_DEFAULT = 2,
};
enum fsx_kind { FSX_KIND_TABLE = 0, FSX_KIND_SELECTOR = 1, FSX_KIND_LEARNER = 2 };

struct fsx_pipeline {
	struct rte_swx_pipeline *p;
	struct rte_swx_ctl_pipeline *ctl;
	struct rte_mempool *pool;
	struct rte_swx_ctl_pipeline_info info;
	uint32_t n_ports;     /* P4 ports: input and output ports 0..n_ports-1. */
	uint32_t n_ports_in;  /* n_ports rounded up to a power of two. */
	int *idle_fds;        /* Both ends of the padding socketpairs. */
	uint32_t n_idle_fds;
	/* The one object with staged changes (see the top of the file). */
	uint32_t n_staged;
	int staged_kind;
	uint32_t staged_id;
	/* Selectors whose control shadow aliases the live object after a failed commit. */
	uint8_t *selector_aliased;
};

static int eal_done;
static unsigned int object_counter;

static int
fail(char *err, size_t errlen, int status, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return status < 0 ? status : -status;
}

static const char *
errno_text(int status)
{
	switch (-status) {
	case EINVAL: return "invalid argument (EINVAL)";
	case ENOMEM: return "out of memory (ENOMEM): raise the EAL memory size";
	case ENOSPC: return "no space (ENOSPC): table, selector group or member limit reached";
	case EEXIST: return "already exists (EEXIST)";
	case ENODEV: return "table object could not be created (ENODEV): EAL memory exhausted or "
			    "entries the table type rejects";
	case EIO: return "I/O error (EIO)";
	default: return strerror(-status);
	}
}

FSX_EXPORT const char *
fsx_dpdk_version(void)
{
	return rte_version();
}

/* Initialise the EAL from a whitespace-separated argument string. The calling thread's CPU
 * affinity is restored afterwards: the EAL pins it to its main lcore, which would pin the whole
 * host process (and every thread it starts later) to one core.
 */
FSX_EXPORT int
fsx_eal_init(const char *args, char *err, size_t errlen)
{
	char *copy, *argv[64], *save = NULL, *tok;
	int argc = 0, status;
	cpu_set_t affinity;
	int have_affinity;

	if (eal_done)
		return fail(err, errlen, -EALREADY,
			    "the DPDK EAL is already initialised in this process (one EAL per process)");

	copy = strdup(args ? args : "");
	if (!copy)
		return fail(err, errlen, -ENOMEM, "out of memory");

	argv[argc++] = "felix-p4-swx";
	for (tok = strtok_r(copy, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
		if (argc >= (int)RTE_DIM(argv) - 1) {
			free(copy);
			return fail(err, errlen, -E2BIG, "too many EAL arguments");
		}
		argv[argc++] = tok;
	}
	argv[argc] = NULL;

	have_affinity = !sched_getaffinity(0, sizeof(affinity), &affinity);

	/* EAL logs to stdout and syslog by default; keep it on stderr only. */
	rte_openlog_stream(stderr);

	status = rte_eal_init(argc, argv);
	if (status < 0) {
		int e = rte_errno;

		free(copy);
		if (e == EALREADY)
			eal_done = 1;
		return fail(err, errlen, -(e ? e : EINVAL),
			    "rte_eal_init(%s) failed: %s (DPDK may refuse a second attempt in this "
			    "process)", args, rte_strerror(e));
	}
	/* argv strings may be kept by the EAL: copy stays allocated for the process lifetime. */
	eal_done = 1;

	if (have_affinity)
		sched_setaffinity(0, sizeof(affinity), &affinity);

	return 0;
}

FSX_EXPORT uint64_t
fsx_tsc_hz(void)
{
	return eal_done ? rte_get_tsc_hz() : 0;
}

/* Translate an SWX spec file into the C file that is compiled into the pipeline library. */
FSX_EXPORT int
fsx_codegen(const char *spec_path, const char *c_path, char *err, size_t errlen)
{
	FILE *spec, *code;
	uint32_t err_line = 0;
	const char *err_msg = NULL;
	int status;

	spec = fopen(spec_path, "r");
	if (!spec)
		return fail(err, errlen, -errno, "cannot open spec %s: %s", spec_path,
			    strerror(errno));

	code = fopen(c_path, "w");
	if (!code) {
		status = -errno;
		fclose(spec);
		return fail(err, errlen, status, "cannot create %s: %s", c_path,
			    strerror(-status));
	}

	status = rte_swx_pipeline_codegen(spec, code, &err_line, &err_msg);
	fclose(spec);
	if (fclose(code) && !status)
		status = -EIO;

	if (status) {
		if (err_line)
			return fail(err, errlen, status, "%s:%u: %s", spec_path, err_line,
				    err_msg ? err_msg : errno_text(status));
		return fail(err, errlen, status, "%s: %s", spec_path,
			    err_msg ? err_msg : errno_text(status));
	}
	return 0;
}

static void
idle_fds_close(struct fsx_pipeline *x)
{
	uint32_t i;

	for (i = 0; i < x->n_idle_fds; i++)
		close(x->idle_fds[i]);
	free(x->idle_fds);
	x->idle_fds = NULL;
	x->n_idle_fds = 0;
}

FSX_EXPORT void
fsx_pipeline_free(struct fsx_pipeline *x)
{
	if (!x)
		return;
	if (x->ctl) {
		/* DPDK 22.11: a table without incremental update (wildcard, LPM) has one object
		 * shared by the pipeline's table state and the control's shadow state, and both
		 * rte_swx_ctl_pipeline_free and rte_swx_pipeline_free free it. Let only the
		 * control free it.
		 */
		struct rte_swx_table_state *ts = NULL;
		uint32_t i;

		if (!rte_swx_pipeline_table_state_get(x->p, &ts) && ts)
			for (i = 0; i < x->info.n_tables; i++) {
				struct rte_swx_table_ops ops;
				int is_stub = 1;

				if (!rte_swx_ctl_table_ops_get(x->p, i, &ops, &is_stub) && !is_stub &&
				    !ops.add)
					ts[i].obj = NULL;
			}
		if (ts && x->selector_aliased)
			for (i = 0; i < x->info.n_selectors; i++)
				if (x->selector_aliased[i])
					ts[x->info.n_tables + i].obj = NULL;
		rte_swx_ctl_pipeline_free(x->ctl);
	}
	if (x->p)
		rte_swx_pipeline_free(x->p);
	if (x->pool)
		rte_mempool_free(x->pool);
	idle_fds_close(x);
	free(x->selector_aliased);
	free(x);
}

static uint32_t
pow2_at_least(uint32_t n)
{
	uint32_t v = 1;

	while (v < n)
		v <<= 1;
	return v;
}

/* Build a pipeline from a library made from fsx_codegen's output.
 * port_fds[i] (non-blocking) serves P4 port i in both directions. mtu bounds the frame size read
 * from an fd; burst is the fd ports' burst size; n_mbufs sizes the packet buffer pool.
 */
FSX_EXPORT struct fsx_pipeline *
fsx_pipeline_build(const char *lib_path, const int *port_fds, uint32_t n_ports, uint32_t mtu,
		   uint32_t burst, uint32_t n_mbufs, char *err, size_t errlen)
{
	struct fsx_pipeline *x = NULL;
	char name[RTE_SWX_NAME_SIZE], pool_name[RTE_MEMPOOL_NAMESIZE];
	char *iospec = NULL;
	size_t iospec_size = 0;
	FILE *io = NULL;
	uint32_t i;
	int status;

	if (!eal_done) {
		fail(err, errlen, -EINVAL, "the DPDK EAL is not initialised");
		return NULL;
	}
	if (!n_ports || !port_fds || !mtu || !burst || !n_mbufs) {
		fail(err, errlen, -EINVAL,
		     "need at least one port and non-zero mtu, burst and buffer count");
		return NULL;
	}
	if (RTE_PKTMBUF_HEADROOM + mtu > UINT16_MAX) {
		fail(err, errlen, -EINVAL, "mtu %u too large (packet buffers hold at most %u bytes)",
		     mtu, UINT16_MAX - RTE_PKTMBUF_HEADROOM);
		return NULL;
	}
	for (i = 0; i < n_ports; i++)
		if (port_fds[i] < 0 || !(fcntl(port_fds[i], F_GETFL) & O_NONBLOCK)) {
			fail(err, errlen, -EINVAL, "port %u: fd %d is not an open non-blocking fd",
			     i, port_fds[i]);
			return NULL;
		}

	x = calloc(1, sizeof(*x));
	if (!x) {
		fail(err, errlen, -ENOMEM, "out of memory");
		return NULL;
	}
	x->n_ports = n_ports;
	x->n_ports_in = pow2_at_least(n_ports);

	object_counter++;
	snprintf(name, sizeof(name), "fsx%u", object_counter);
	snprintf(pool_name, sizeof(pool_name), "fsx%u", object_counter);

	x->pool = rte_pktmbuf_pool_create(pool_name, n_mbufs, 0, 0,
					  RTE_PKTMBUF_HEADROOM + mtu, SOCKET_ID_ANY);
	if (!x->pool) {
		fail(err, errlen, -ENOMEM,
		     "cannot create a pool of %u packet buffers of %u bytes: %s", n_mbufs,
		     RTE_PKTMBUF_HEADROOM + mtu, rte_strerror(rte_errno));
		goto error;
	}

	/* Padding input ports: the idle end of a socketpair nobody writes to. */
	x->idle_fds = calloc(2 * (x->n_ports_in - n_ports) + 1, sizeof(int));
	if (!x->idle_fds) {
		fail(err, errlen, -ENOMEM, "out of memory");
		goto error;
	}

	io = open_memstream(&iospec, &iospec_size);
	if (!io) {
		fail(err, errlen, -ENOMEM, "out of memory");
		goto error;
	}
	for (i = 0; i < x->n_ports_in; i++) {
		int fd = i < n_ports ? port_fds[i] : -1;

		if (fd < 0) {
			int pair[2];

			if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
				       pair)) {
				fail(err, errlen, -errno, "socketpair: %s", strerror(errno));
				goto error;
			}
			x->idle_fds[x->n_idle_fds++] = pair[0];
			x->idle_fds[x->n_idle_fds++] = pair[1];
			fd = pair[0];
		}
		fprintf(io, "port in %u fd %d mtu %u mempool %s bsz %u\n", i, fd, mtu, pool_name,
			burst);
	}
	for (i = 0; i < n_ports; i++)
		fprintf(io, "port out %u fd %d bsz %u\n", i, port_fds[i], burst);
	if (fclose(io)) {
		io = NULL;
		fail(err, errlen, -ENOMEM, "out of memory");
		goto error;
	}
	io = fmemopen(iospec, iospec_size, "r");
	if (!io) {
		fail(err, errlen, -ENOMEM, "out of memory");
		goto error;
	}

	status = rte_swx_pipeline_build_from_lib(&x->p, name, lib_path, io, 0);
	fclose(io);
	io = NULL;
	if (status) {
		if (status == -EIO) {
			void *h = dlopen(lib_path, RTLD_LAZY);
			const char *why = h ? "dlopen failed inside DPDK" : dlerror();

			if (h)
				dlclose(h);
			fail(err, errlen, status, "cannot load pipeline library %s: %s", lib_path,
			     why);
		} else {
			fail(err, errlen, status,
			     "rte_swx_pipeline_build_from_lib(%s) failed: %s; the library must "
			     "come from fsx_codegen on this DPDK version",
			     lib_path, errno_text(status));
		}
		x->p = NULL;
		goto error;
	}

	status = rte_swx_ctl_pipeline_info_get(x->p, &x->info);
	if (status) {
		fail(err, errlen, status, "rte_swx_ctl_pipeline_info_get: %s", errno_text(status));
		goto error;
	}

	/* A selector's group table is allocated from its declared sizes but indexed with
	 * those sizes rounded up to powers of two (DPDK 22.11), so only powers of two are safe.
	 */
	for (i = 0; i < x->info.n_selectors; i++) {
		struct rte_swx_ctl_selector_info si;

		status = rte_swx_ctl_selector_info_get(x->p, i, &si);
		if (status) {
			fail(err, errlen, status, "cannot read selector %u: %s", i,
			     errno_text(status));
			goto error;
		}
		if (!rte_is_power_of_2(si.n_groups_max) ||
		    !rte_is_power_of_2(si.n_members_per_group_max)) {
			fail(err, errlen, -EINVAL,
			     "selector %s: n_groups_max %u and n_members_per_group_max %u must be "
			     "powers of two (DPDK 22.11 indexes past its group table otherwise)",
			     si.name, si.n_groups_max, si.n_members_per_group_max);
			goto error;
		}
	}
	x->selector_aliased = calloc(x->info.n_selectors + 1, 1);
	if (!x->selector_aliased) {
		fail(err, errlen, -ENOMEM, "out of memory");
		goto error;
	}

	x->ctl = rte_swx_ctl_pipeline_create(x->p);
	if (!x->ctl) {
		fail(err, errlen, -ENOMEM,
		     "rte_swx_ctl_pipeline_create failed (out of memory for the control copies "
		     "of the tables?)");
		goto error;
	}

	free(iospec);
	return x;

error:
	if (io)
		fclose(io);
	free(iospec);
	fsx_pipeline_free(x);
	return NULL;
}

/* Pipeline description, for the Python side's name lookups. */
FSX_EXPORT int
fsx_counts(struct fsx_pipeline *x, uint32_t *out /* [6] */)
{
	out[0] = x->info.n_actions;
	out[1] = x->info.n_tables;
	out[2] = x->info.n_selectors;
	out[3] = x->info.n_learners;
	out[4] = x->n_ports;
	out[5] = x->n_ports_in;
	return 0;
}

FSX_EXPORT int
fsx_action_name(struct fsx_pipeline *x, uint32_t action_id, char *name, size_t len)
{
	struct rte_swx_ctl_action_info info;
	int status = rte_swx_ctl_action_info_get(x->p, action_id, &info);

	if (!status)
		snprintf(name, len, "%s", info.name);
	return status;
}

/* Name of table/selector/learner `id` and its action ids (selectors have none). */
FSX_EXPORT int
fsx_object_info(struct fsx_pipeline *x, int kind, uint32_t id, char *name, size_t len,
		uint32_t *action_ids, uint32_t max_actions, uint32_t *n_actions)
{
	uint32_t i, n = 0;
	int status;

	if (kind == FSX_KIND_TABLE) {
		struct rte_swx_ctl_table_info info;

		status = rte_swx_ctl_table_info_get(x->p, id, &info);
		if (status)
			return status;
		snprintf(name, len, "%s", info.name);
		n = info.n_actions;
		for (i = 0; i < n && i < max_actions; i++) {
			struct rte_swx_ctl_table_action_info ai;

			status = rte_swx_ctl_table_action_info_get(x->p, id, i, &ai);
			if (status)
				return status;
			action_ids[i] = ai.action_id;
		}
	} else if (kind == FSX_KIND_LEARNER) {
		struct rte_swx_ctl_learner_info info;

		status = rte_swx_ctl_learner_info_get(x->p, id, &info);
		if (status)
			return status;
		snprintf(name, len, "%s", info.name);
		n = info.n_actions;
		for (i = 0; i < n && i < max_actions; i++) {
			struct rte_swx_ctl_table_action_info ai;

			status = rte_swx_ctl_learner_action_info_get(x->p, id, i, &ai);
			if (status)
				return status;
			action_ids[i] = ai.action_id;
		}
	} else if (kind == FSX_KIND_SELECTOR) {
		struct rte_swx_ctl_selector_info info;

		status = rte_swx_ctl_selector_info_get(x->p, id, &info);
		if (status)
			return status;
		snprintf(name, len, "%s", info.name);
	} else {
		return -EINVAL;
	}
	*n_actions = n;
	return 0;
}

/* A selector's n_members_per_group_max (member ids must be below it), 0 if no such selector. */
FSX_EXPORT uint32_t
fsx_selector_members_max(struct fsx_pipeline *x, uint32_t selector_id)
{
	struct rte_swx_ctl_selector_info si;

	return rte_swx_ctl_selector_info_get(x->p, selector_id, &si) ? 0 :
									si.n_members_per_group_max;
}

/* What an entry line for `table` must look like, for error messages. */
static void
table_syntax(struct fsx_pipeline *x, const char *table, char *buf, size_t len)
{
	struct rte_swx_ctl_table_info info;
	size_t used = 0;
	uint32_t t, i, j;

	buf[0] = 0;
	for (t = 0; t < x->info.n_tables; t++) {
		if (rte_swx_ctl_table_info_get(x->p, t, &info))
			return;
		if (!strcmp(info.name, table))
			break;
	}
	if (t == x->info.n_tables)
		return;

	used += snprintf(buf + used, len - used, "expected: match <%u values> ",
			 info.n_match_fields);
	for (i = 0; i < info.n_actions && used < len; i++) {
		struct rte_swx_ctl_table_action_info ai;
		struct rte_swx_ctl_action_info a;

		if (rte_swx_ctl_table_action_info_get(x->p, t, i, &ai) ||
		    rte_swx_ctl_action_info_get(x->p, ai.action_id, &a))
			return;
		used += snprintf(buf + used, len - used, "%s%s(", i ? " | " : "action ", a.name);
		for (j = 0; j < a.n_args && used < len; j++) {
			struct rte_swx_ctl_action_arg_info arg;

			if (rte_swx_ctl_action_arg_info_get(x->p, ai.action_id, j, &arg))
				return;
			used += snprintf(buf + used, len - used, "%s%s:%u", j ? " " : "",
					 arg.name, arg.n_bits);
		}
		if (used < len)
			used += snprintf(buf + used, len - used, ")");
	}
}

/* The id of the table/selector/learner called `name`, or -1. */
static int
object_find(struct fsx_pipeline *x, int kind, const char *name)
{
	uint32_t n = kind == FSX_KIND_TABLE ? x->info.n_tables :
		     kind == FSX_KIND_LEARNER ? x->info.n_learners : x->info.n_selectors;
	uint32_t i, n_actions;
	char found[RTE_SWX_CTL_NAME_SIZE];

	for (i = 0; i < n; i++)
		if (!fsx_object_info(x, kind, i, found, sizeof(found), NULL, 0, &n_actions) &&
		    !strcmp(found, name))
			return (int)i;
	return -1;
}

static int
object_exists(struct fsx_pipeline *x, int kind, const char *name)
{
	return object_find(x, kind, name) >= 0;
}

static const char *
kind_name(int kind)
{
	return kind == FSX_KIND_TABLE ? "table" : kind == FSX_KIND_LEARNER ? "learner" : "selector";
}

/* Refuse staging for a second object while another has staged changes. */
static int
stage_check(struct fsx_pipeline *x, int kind, uint32_t id, const char *name, char *err,
	    size_t errlen)
{
	if (x->n_staged && (x->staged_kind != kind || x->staged_id != id))
		return fail(err, errlen, -EBUSY,
			    "%s %s: changes to another table or selector are staged; commit or "
			    "abort them first (DPDK 22.11 cannot roll back a commit spanning several)",
			    kind_name(kind), name);
	return 0;
}

static void
staged(struct fsx_pipeline *x, int kind, uint32_t id)
{
	x->n_staged++;
	x->staged_kind = kind;
	x->staged_id = id;
}

static void
entry_free(struct rte_swx_table_entry *entry)
{
	/* DPDK 22.11 exports no free for entries it parsed; they are plain malloc'd blocks. */
	if (!entry)
		return;
	free(entry->key);
	free(entry->key_mask);
	free(entry->action_data);
	free(entry);
}

/* Whether `action_id` may be used for a regular entry (op ADD) or the default entry (op
 * DEFAULT) of table `id`; DPDK only says EINVAL at staging otherwise.
 */
static int
table_action_check(struct fsx_pipeline *x, uint32_t id, const char *table, int op,
		   uint64_t action_id, char *err, size_t errlen)
{
	struct rte_swx_ctl_table_info info;
	struct rte_swx_ctl_action_info a;
	uint32_t i;
	int status;

	status = rte_swx_ctl_table_info_get(x->p, id, &info);
	if (!status)
		status = rte_swx_ctl_action_info_get(x->p, (uint32_t)action_id, &a);
	if (status)
		return fail(err, errlen, status, "table %s: %s", table, errno_text(status));
	if (op == FSX_ENTRY_DEFAULT && info.default_action_is_const)
		return fail(err, errlen, -EPERM, "table %s: the default action is constant", table);

	for (i = 0; i < info.n_actions; i++) {
		struct rte_swx_ctl_table_action_info ai;

		status = rte_swx_ctl_table_action_info_get(x->p, id, i, &ai);
		if (status)
			return fail(err, errlen, status, "table %s: %s", table, errno_text(status));
		if (ai.action_id != action_id)
			continue;
		if (op == FSX_ENTRY_ADD && !ai.action_is_for_table_entries)
			return fail(err, errlen, -EINVAL,
				    "table %s: action %s is only for the default entry", table,
				    a.name);
		if (op == FSX_ENTRY_DEFAULT && !ai.action_is_for_default_entry)
			return fail(err, errlen, -EINVAL,
				    "table %s: action %s is not allowed as the default entry",
				    table, a.name);
		return 0;
	}
	return fail(err, errlen, -EINVAL, "table %s has no action %s", table, a.name);
}

/* Stage an entry given in DPDK's text form:
 *   match <v>[/<mask>] ... [priority <p>] action <name> [<arg> <v> ...]
 * op ADD (insert or, for an existing key, modify), DELETE (only the match part counts) or
 * DEFAULT (just "action ..."). check_only: validate, stage nothing. Staged changes take effect
 * at fsx_commit.
 */
FSX_EXPORT int
fsx_table_entry(struct fsx_pipeline *x, int op, const char *table, const char *line,
		int check_only, char *err, size_t errlen)
{
	struct rte_swx_table_entry *entry;
	int blank = 0, status, id;
	char syntax[768];

	if (op != FSX_ENTRY_ADD && op != FSX_ENTRY_DELETE && op != FSX_ENTRY_DEFAULT)
		return fail(err, errlen, -EINVAL, "unknown entry operation %d", op);
	id = object_find(x, FSX_KIND_TABLE, table);
	if (id < 0)
		return fail(err, errlen, -ENOENT, "no table named %s", table);
	if (!check_only) {
		status = stage_check(x, FSX_KIND_TABLE, (uint32_t)id, table, err, errlen);
		if (status)
			return status;
	}

	entry = rte_swx_ctl_pipeline_table_entry_read(x->ctl, table, line, &blank);
	if (!entry) {
		if (blank)
			return fail(err, errlen, -EINVAL, "table %s: empty entry", table);
		table_syntax(x, table, syntax, sizeof(syntax));
		return fail(err, errlen, -EINVAL, "table %s: cannot parse entry '%s'; %s", table,
			    line, syntax);
	}

	status = 0;
	if (op != FSX_ENTRY_DELETE)
		status = table_action_check(x, (uint32_t)id, table, op, entry->action_id, err,
					    errlen);
	if (!status && !check_only) {
		if (op == FSX_ENTRY_ADD)
			status = rte_swx_ctl_pipeline_table_entry_add(x->ctl, table, entry);
		else if (op == FSX_ENTRY_DELETE)
			status = rte_swx_ctl_pipeline_table_entry_delete(x->ctl, table, entry);
		else
			status = rte_swx_ctl_pipeline_table_default_entry_add(x->ctl, table, entry);
		if (status)
			fail(err, errlen, status, "table %s: '%s' rejected: %s", table, line,
			     errno_text(status));
		else
			staged(x, FSX_KIND_TABLE, (uint32_t)id);
	}
	entry_free(entry);
	return status;
}

/* The default entry of a learner table ("action <name> [<arg> <v> ...]"). */
FSX_EXPORT int
fsx_learner_default(struct fsx_pipeline *x, const char *learner, const char *line, int check_only,
		    char *err, size_t errlen)
{
	struct rte_swx_ctl_learner_info info;
	struct rte_swx_ctl_table_action_info slot;
	struct rte_swx_table_entry *entry;
	int blank = 0, status, id;

	id = object_find(x, FSX_KIND_LEARNER, learner);
	if (id < 0)
		return fail(err, errlen, -ENOENT, "no learner table named %s", learner);
	if (!check_only) {
		status = stage_check(x, FSX_KIND_LEARNER, (uint32_t)id, learner, err, errlen);
		if (status)
			return status;
	}
	status = rte_swx_ctl_learner_info_get(x->p, (uint32_t)id, &info);
	if (status)
		return fail(err, errlen, status, "learner %s: %s", learner, errno_text(status));
	if (info.default_action_is_const)
		return fail(err, errlen, -EPERM, "learner %s: the default action is constant",
			    learner);

	entry = rte_swx_ctl_pipeline_learner_default_entry_read(x->ctl, learner, line, &blank);
	if (!entry)
		return fail(err, errlen, -EINVAL,
			    "learner %s: cannot parse default entry '%s' (expected: action "
			    "<name> [<arg> <value> ...] with one of its actions)", learner, line);

	/* DPDK 22.11's rte_swx_ctl_pipeline_learner_default_entry_add looks the action up in the
	 * learner's action list by its pipeline-wide action id, reading past the list unless the
	 * two numbers coincide. Only accept the actions for which they do.
	 */
	if (entry->action_id >= info.n_actions ||
	    rte_swx_ctl_learner_action_info_get(x->p, (uint32_t)id, (uint32_t)entry->action_id,
						&slot) ||
	    slot.action_id != entry->action_id)
		status = fail(err, errlen, -EOPNOTSUPP,
			      "learner %s: DPDK 22.11 can only set a learner default action whose "
			      "position in the spec's action list equals its position in the "
			      "learner's (declare the learner's actions first, in its order)",
			      learner);
	else if (!slot.action_is_for_default_entry)
		status = fail(err, errlen, -EINVAL,
			      "learner %s: '%s' is not allowed as the default entry", learner,
			      line);
	if (!status && !check_only) {
		status = rte_swx_ctl_pipeline_learner_default_entry_add(x->ctl, learner, entry);
		if (status)
			fail(err, errlen, status, "learner %s: default entry '%s' rejected: %s",
			     learner, line, errno_text(status));
		else
			staged(x, FSX_KIND_LEARNER, (uint32_t)id);
	}
	entry_free(entry);
	return status;
}

/* Allocate a group: DPDK picks the lowest free id. This is not a staged change: commit and
 * abort leave the allocation alone (delete the group to release it).
 */
FSX_EXPORT int
fsx_selector_group_add(struct fsx_pipeline *x, const char *selector, uint32_t *group_id,
		       char *err, size_t errlen)
{
	int status;

	if (!object_exists(x, FSX_KIND_SELECTOR, selector))
		return fail(err, errlen, -ENOENT, "no selector named %s", selector);
	status = rte_swx_ctl_pipeline_selector_group_add(x->ctl, selector, group_id);
	if (status)
		return fail(err, errlen, status, "selector %s: group add: %s", selector,
			    status == -ENOSPC ? "all n_groups_max groups are in use" :
						errno_text(status));
	return 0;
}

FSX_EXPORT int
fsx_selector_group_delete(struct fsx_pipeline *x, const char *selector, uint32_t group_id,
			  char *err, size_t errlen)
{
	int id = object_find(x, FSX_KIND_SELECTOR, selector), status;

	if (id < 0)
		return fail(err, errlen, -ENOENT, "no selector named %s", selector);
	status = stage_check(x, FSX_KIND_SELECTOR, (uint32_t)id, selector, err, errlen);
	if (status)
		return status;
	status = rte_swx_ctl_pipeline_selector_group_delete(x->ctl, selector, group_id);
	if (status)
		return fail(err, errlen, status, "selector %s: group %u delete: %s", selector,
			    group_id,
			    status == -EINVAL ? "no such group" : errno_text(status));
	staged(x, FSX_KIND_SELECTOR, (uint32_t)id);
	return 0;
}

/* Stage a member with a weight, or its removal for weight 0. */
FSX_EXPORT int
fsx_selector_member(struct fsx_pipeline *x, const char *selector, uint32_t group_id,
		    uint32_t member_id, uint32_t weight, char *err, size_t errlen)
{
	struct rte_swx_ctl_selector_info si;
	int id = object_find(x, FSX_KIND_SELECTOR, selector), status;

	if (id < 0)
		return fail(err, errlen, -ENOENT, "no selector named %s", selector);
	status = stage_check(x, FSX_KIND_SELECTOR, (uint32_t)id, selector, err, errlen);
	if (status)
		return status;
	status = rte_swx_ctl_selector_info_get(x->p, (uint32_t)id, &si);
	if (status)
		return fail(err, errlen, status, "selector %s: %s", selector, errno_text(status));
	/* The selector table stores member ids in a group's slots and refuses ids past the slot
	 * count at commit time; refuse them here, where it cannot poison a commit.
	 */
	if (member_id >= si.n_members_per_group_max)
		return fail(err, errlen, -ENOSPC,
			    "selector %s: member id %u out of range (ids must be < "
			    "n_members_per_group_max %u)",
			    selector, member_id, si.n_members_per_group_max);
	status = weight ?
		rte_swx_ctl_pipeline_selector_group_member_add(x->ctl, selector, group_id,
							       member_id, weight) :
		rte_swx_ctl_pipeline_selector_group_member_delete(x->ctl, selector, group_id,
								  member_id);
	if (status)
		return fail(err, errlen, status, "selector %s: group %u member %u %s: %s",
			    selector, group_id, member_id, weight ? "add" : "delete",
			    status == -EINVAL ? "no such group (or it is being deleted)" :
						errno_text(status));
	staged(x, FSX_KIND_SELECTOR, (uint32_t)id);
	return 0;
}

/* Apply the staged changes; on failure they are all discarded and nothing changes. */
FSX_EXPORT int
fsx_commit(struct fsx_pipeline *x, char *err, size_t errlen)
{
	int status = rte_swx_ctl_pipeline_commit(x->ctl, 1);
	int kind = x->staged_kind, had_staged = x->n_staged > 0;
	uint32_t id = x->staged_id;

	x->n_staged = 0;
	if (status) {
		char name[RTE_SWX_CTL_NAME_SIZE] = "?";
		uint32_t n_actions;

		if (!had_staged)
			return fail(err, errlen, status, "commit failed: %s", errno_text(status));
		fsx_object_info(x, kind, id, name, sizeof(name), NULL, 0, &n_actions);
		if (kind == FSX_KIND_SELECTOR)
			x->selector_aliased[id] = 1;
		return fail(err, errlen, status, "%s %s: commit failed, its staged changes are "
			    "discarded: %s", kind_name(kind), name, errno_text(status));
	}
	return 0;
}

FSX_EXPORT void
fsx_abort(struct fsx_pipeline *x)
{
	rte_swx_ctl_pipeline_abort(x->ctl);
	x->n_staged = 0;
}

/* Execute n pipeline instructions, then flush the output ports. */
FSX_EXPORT void
fsx_run(struct fsx_pipeline *x, uint32_t n_instructions)
{
	rte_swx_pipeline_run(x->p, n_instructions);
	rte_swx_pipeline_flush(x->p);
}

/* out[0..4] = in packets, in bytes, out packets, out bytes, out packets dropped by the port.
 * Port n_ports is the drop port (output only; a sink counts everything as dropped).
 */
FSX_EXPORT int
fsx_port_stats(struct fsx_pipeline *x, uint32_t port, uint64_t *out)
{
	struct rte_swx_port_in_stats in = {0};
	struct rte_swx_port_out_stats o = {0};
	int status;

	if (port > x->n_ports)
		return -EINVAL;
	if (port < x->n_ports) {
		status = rte_swx_ctl_pipeline_port_in_stats_read(x->p, port, &in);
		if (status)
			return status;
	}
	status = rte_swx_ctl_pipeline_port_out_stats_read(x->p, port, &o);
	if (status)
		return status;
	out[0] = in.n_pkts;
	out[1] = in.n_bytes;
	out[2] = o.n_pkts;
	out[3] = o.n_bytes;
	out[4] = o.n_pkts_drop;
	return 0;
}

static uint64_t
out_pkts_total(struct fsx_pipeline *x)
{
	struct rte_swx_port_out_stats o;
	uint64_t total = 0;
	uint32_t i;

	for (i = 0; i <= x->n_ports; i++)
		if (!rte_swx_ctl_pipeline_port_out_stats_read(x->p, i, &o))
			total += o.n_pkts + o.n_pkts_drop;
	return total;
}

FSX_EXPORT uint64_t
fsx_out_pkts_total(struct fsx_pipeline *x)
{
	return out_pkts_total(x);
}

static uint64_t
in_pkts_total(struct fsx_pipeline *x)
{
	struct rte_swx_port_in_stats in;
	uint64_t total = 0;
	uint32_t i;

	for (i = 0; i < x->n_ports; i++)
		if (!rte_swx_ctl_pipeline_port_in_stats_read(x->p, i, &in))
			total += in.n_pkts;
	return total;
}

/* Move frames that arrived on the ports' fds through the pipeline until it is idle: every frame
 * read has left (sent or dropped) and a chunk of at least one poll per input port read nothing
 * more. Returns 1 when idle, 0 when max_instructions ran out first (call again). Frames read
 * into a port's burst buffer count as received, so none is left behind inside the pipeline.
 */
FSX_EXPORT int
fsx_run_until_idle(struct fsx_pipeline *x, uint64_t max_instructions)
{
	uint32_t chunk = x->n_ports_in < 64 ? 64 : x->n_ports_in;
	uint64_t done = 0, in_before = in_pkts_total(x), in_now;
	int idle = 0;

	while (done < max_instructions) {
		rte_swx_pipeline_run(x->p, chunk);
		done += chunk;
		in_now = in_pkts_total(x);
		if (in_now == in_before && out_pkts_total(x) == in_now) {
			idle = 1;
			break;
		}
		in_before = in_now;
	}
	rte_swx_pipeline_flush(x->p);
	return idle;
}

/* Run until input port in_port has received in_pkts packets in total and the output ports
 * (drop port included) have sent out_pkts in total, then flush. Used to push one injected frame
 * through: nothing else feeds the pipeline, so this ends or fails within max_instructions.
 */
FSX_EXPORT int
fsx_run_until(struct fsx_pipeline *x, uint32_t in_port, uint64_t in_pkts, uint64_t out_pkts,
	      uint64_t max_instructions, char *err, size_t errlen)
{
	struct rte_swx_port_in_stats in;
	uint64_t done = 0;
	const uint32_t chunk = 4;

	if (in_port >= x->n_ports)
		return fail(err, errlen, -EINVAL, "no input port %u", in_port);

	while (done < max_instructions) {
		rte_swx_pipeline_run(x->p, chunk);
		done += chunk;
		if (rte_swx_ctl_pipeline_port_in_stats_read(x->p, in_port, &in))
			return fail(err, errlen, -EIO, "cannot read port %u stats", in_port);
		if (in.n_pkts >= in_pkts && out_pkts_total(x) >= out_pkts) {
			rte_swx_pipeline_flush(x->p);
			return 0;
		}
	}
	rte_swx_pipeline_flush(x->p);
	if (in.n_pkts < in_pkts)
		return fail(err, errlen, -ETIMEDOUT,
			    "port %u did not receive the frame within %lu instructions (frame "
			    "longer than the MTU, or not a datagram?)",
			    in_port, (unsigned long)max_instructions);
	return fail(err, errlen, -ETIMEDOUT,
		    "the frame entered on port %u but did not leave within %lu instructions",
		    in_port, (unsigned long)max_instructions);
}

/* Run until the input ports have received in_pkts packets in total and the output ports (drop
 * port included) have sent out_pkts, then flush: a burst of frames queued on the input ports,
 * pushed through with the counters read every `chunk` instructions (fsx_run_until reads them
 * every few, which would dominate a throughput measurement). A port reads up to a burst of
 * frames at once, so the output side is waited for once the input is in.
 */
FSX_EXPORT int
fsx_run_burst(struct fsx_pipeline *x, uint64_t in_pkts, uint64_t out_pkts, uint32_t chunk,
	      uint64_t max_instructions, char *err, size_t errlen)
{
	uint64_t done = 0;

	if (!chunk)
		return fail(err, errlen, -EINVAL, "a chunk of 0 instructions");
	while (done < max_instructions && in_pkts_total(x) < in_pkts) {
		rte_swx_pipeline_run(x->p, chunk);
		done += chunk;
	}
	while (done < max_instructions && out_pkts_total(x) < out_pkts) {
		rte_swx_pipeline_run(x->p, chunk);
		done += chunk;
	}
	rte_swx_pipeline_flush(x->p);
	if (done >= max_instructions)
		return fail(err, errlen, -ETIMEDOUT,
			    "the burst did not get through within %lu instructions (%lu of %lu "
			    "frames in, %lu of %lu out)", (unsigned long)max_instructions,
			    (unsigned long)in_pkts_total(x), (unsigned long)in_pkts,
			    (unsigned long)out_pkts_total(x), (unsigned long)out_pkts);
	return 0;
}

/* out = hit, miss; per_action[action id] for every pipeline action (n_actions entries). */
FSX_EXPORT int
fsx_table_stats(struct fsx_pipeline *x, const char *table, uint64_t *out, uint64_t *per_action,
		char *err, size_t errlen)
{
	struct rte_swx_table_stats stats = {.n_pkts_action = per_action};
	int status;

	if (!object_exists(x, FSX_KIND_TABLE, table))
		return fail(err, errlen, -ENOENT, "no table named %s", table);
	status = rte_swx_ctl_pipeline_table_stats_read(x->p, table, &stats);
	if (status)
		return fail(err, errlen, status, "table %s stats: %s", table, errno_text(status));
	out[0] = stats.n_pkts_hit;
	out[1] = stats.n_pkts_miss;
	return 0;
}

/* out = hit, miss, learn ok, learn error, rearm, forget; per_action as for tables. */
FSX_EXPORT int
fsx_learner_stats(struct fsx_pipeline *x, const char *learner, uint64_t *out,
		  uint64_t *per_action, char *err, size_t errlen)
{
	struct rte_swx_learner_stats stats = {.n_pkts_action = per_action};
	int status;

	if (!object_exists(x, FSX_KIND_LEARNER, learner))
		return fail(err, errlen, -ENOENT, "no learner table named %s", learner);
	status = rte_swx_ctl_pipeline_learner_stats_read(x->p, learner, &stats);
	if (status)
		return fail(err, errlen, status, "learner %s stats: %s", learner,
			    errno_text(status));
	out[0] = stats.n_pkts_hit;
	out[1] = stats.n_pkts_miss;
	out[2] = stats.n_pkts_learn_ok;
	out[3] = stats.n_pkts_learn_err;
	out[4] = stats.n_pkts_rearm;
	out[5] = stats.n_pkts_forget;
	return 0;
}

FSX_EXPORT int
fsx_selector_stats(struct fsx_pipeline *x, const char *selector, uint64_t *n_pkts, char *err,
		   size_t errlen)
{
	struct rte_swx_pipeline_selector_stats stats;
	int status;

	if (!object_exists(x, FSX_KIND_SELECTOR, selector))
		return fail(err, errlen, -ENOENT, "no selector named %s", selector);
	status = rte_swx_ctl_pipeline_selector_stats_read(x->p, selector, &stats);
	if (status)
		return fail(err, errlen, status, "selector %s stats: %s", selector,
			    errno_text(status));
	*n_pkts = stats.n_pkts;
	return 0;
}

/* The learner's timeout `timeout_id` in seconds, as DPDK stores it. */
FSX_EXPORT int
fsx_learner_timeout(struct fsx_pipeline *x, const char *learner, uint32_t timeout_id,
		    uint32_t *seconds, char *err, size_t errlen)
{
	int id = object_find(x, FSX_KIND_LEARNER, learner), status;

	if (id < 0)
		return fail(err, errlen, -ENOENT, "no learner table named %s", learner);
	status = rte_swx_ctl_pipeline_learner_timeout_get(x->p, (uint32_t)id, timeout_id, seconds);
	if (status)
		return fail(err, errlen, status, "learner %s: no timeout %u", learner, timeout_id);
	return 0;
}

/* Set the learner's timeout `timeout_id` to `seconds` on the live pipeline. Entries learned
 * before keep the expiry they were given; entries learned afterwards get the new timeout. */
FSX_EXPORT int
fsx_learner_timeout_set(struct fsx_pipeline *x, const char *learner, uint32_t timeout_id,
			uint32_t seconds, char *err, size_t errlen)
{
	int id = object_find(x, FSX_KIND_LEARNER, learner), status;

	if (id < 0)
		return fail(err, errlen, -ENOENT, "no learner table named %s", learner);
	if (!seconds)
		return fail(err, errlen, -EINVAL, "learner %s: a timeout must be at least 1 s", learner);
	status = rte_swx_ctl_pipeline_learner_timeout_set(x->p, (uint32_t)id, timeout_id, seconds);
	if (status)
		return fail(err, errlen, status, "learner %s: no timeout %u", learner, timeout_id);
	return 0;
}
