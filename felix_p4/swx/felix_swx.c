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

#include <rte_acl.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_log.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_swx_ctl.h>
#include <rte_swx_pipeline.h>
#include <rte_version.h>

/* DPDK's private SWX headers (build/dpdk-internal, from the installed version's source): the
 * pipeline library that fsx_codegen's output becomes includes them too, and felix_wildcard
 * needs them to move a built table onto its type.
 */
#include "rte_swx_pipeline_internal.h"
#include "rte_swx_pipeline_spec.h"

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

/* ---- felix_wildcard: our SWX wildcard-match table type, over DPDK's ACL library ----
 *
 * DPDK 22.11's own wildcard type builds its ACL with max_size 0, for which rte_acl_build gives
 * each of its at most 8 tries the smallest node budget (2,048 nodes) and never retries: rule
 * sets that need more tries fail ("ACL: Exceeded max number of tries: 8") and the table cannot
 * be created. With a non-zero max_size rte_acl_build starts at 16,384 nodes per trie (halving
 * only while the generated context is larger than max_size), so this type holds several times
 * the rules. Bigger tries take longer to build (measured: 2.0 s instead of 0.34 s for 500
 * policy-like rules), so the small budget is tried first and the large one only when it fails.
 * Rules go to the ACL in priority order, which needs fewer tries than SWX's list order for
 * felix-p4's policy stages (at scale S, ingress_stage_0 fits the small budget in 7 tries). Like
 * DPDK's type it has no incremental update: SWX creates a new object from all entries at every
 * commit that changes the table.
 *
 * A table uses it when its spec block says `instanceof felix_wildcard` (engine.py adds that to
 * every wildcard table). rte_swx_pipeline_build_from_lib configures the spec's tables on a
 * pipeline it creates itself, before anyone can register a type on it, so DPDK resolves such a
 * table to its own "wildcard" type; fwc_adopt then moves the table onto this type after the
 * build, before the control plane copies the table's operations.
 */
#define FWC_TYPE_NAME "felix_wildcard"

/* One ACL field over the key: it reads `size` bytes from key byte `start` (which may lie
 * before the key, inside its struct, so the last field need not read past the key's end) and
 * matches the key bytes [lo, hi) among them; the other bytes it reads are don't-care.
 */
struct fwc_field {
	int32_t start;
	uint32_t size;
	uint32_t lo;
	uint32_t hi;
};

struct fwc_layout {
	struct rte_acl_config cfg;
	struct fwc_field fields[RTE_ACL_MAX_FIELDS];
};

RTE_ACL_RULE_DEF(fwc_rule, RTE_ACL_MAX_FIELDS);

struct fwc_table {
	struct rte_acl_ctx *acl; /* NULL when the table has no entries: every lookup misses */
	uint8_t *data;		 /* per entry, in match-priority order: action id, action data */
	size_t entry_size;
};

static unsigned int fwc_counter; /* rte_acl_create returns an existing context of the same name */

static int
fwc_key_byte_used(const struct rte_swx_table_params *params, uint32_t byte)
{
	return !params->key_mask0 || params->key_mask0[byte];
}

/* ACL fields covering every key byte key_mask0 uses. The ACL library wants a 1-byte first
 * field; the others are 4 bytes, each its own input group (classify loads 4 bytes per group).
 */
static int
fwc_layout_get(const struct rte_swx_table_params *params, struct fwc_layout *l)
{
	uint32_t byte = 0, n = 0;

	memset(l, 0, sizeof(*l));
	while (byte < params->key_size && !fwc_key_byte_used(params, byte))
		byte++;
	while (byte < params->key_size) {
		struct fwc_field *f;
		struct rte_acl_field_def *def;
		int32_t start = (int32_t)byte, lowest = -(int32_t)params->key_offset;

		if (n == RTE_ACL_MAX_FIELDS)
			return -E2BIG;
		f = &l->fields[n];
		def = &l->cfg.defs[n];
		f->size = n ? sizeof(uint32_t) : sizeof(uint8_t);
		if ((uint32_t)start + f->size > params->key_size)
			start = (int32_t)params->key_size - (int32_t)f->size;
		f->start = RTE_MAX(start, lowest);
		f->lo = byte;
		f->hi = RTE_MIN((uint32_t)(f->start + (int32_t)f->size), params->key_size);
		def->type = RTE_ACL_FIELD_TYPE_BITMASK;
		def->size = f->size;
		def->field_index = n;
		def->input_index = n;
		def->offset = (uint32_t)((int32_t)params->key_offset + f->start);
		n++;
		byte = f->hi;
		while (byte < params->key_size && !fwc_key_byte_used(params, byte))
			byte++;
	}
	if (!n)
		return -EINVAL;
	l->cfg.num_fields = n;
	l->cfg.num_categories = 1;
	return 0;
}

/* The rule's value and mask for one field: key bytes in network order (the ACL library takes
 * rule fields in host order and reads its input in network order).
 */
static void
fwc_rule_field(const struct rte_swx_table_params *params, const struct fwc_field *f,
	       const struct rte_swx_table_entry *entry, struct rte_acl_field *out)
{
	uint32_t value = 0, mask = 0, i;

	for (i = 0; i < f->size; i++) {
		int32_t at = f->start + (int32_t)i;
		uint8_t m = 0, v = 0;

		if (at >= (int32_t)f->lo && at < (int32_t)f->hi) {
			m = params->key_mask0 ? params->key_mask0[at] : 0xFF;
			if (entry->key_mask)
				m &= entry->key_mask[at];
			v = entry->key[at] & m;
		}
		value = value << 8 | v;
		mask = mask << 8 | m;
	}
	if (f->size == sizeof(uint8_t)) {
		out->value.u8 = (uint8_t)value;
		out->mask_range.u8 = (uint8_t)mask;
	} else {
		out->value.u32 = value;
		out->mask_range.u32 = mask;
	}
}

struct fwc_ranked {
	struct rte_swx_table_entry *entry;
	uint32_t position; /* in SWX's entry list */
};

/* Entries ordered by SWX priority (lower number first), ties by their order in the list. */
static int
fwc_entry_cmp(const void *a, const void *b)
{
	const struct fwc_ranked *x = a, *y = b;

	if (x->entry->key_priority != y->entry->key_priority)
		return x->entry->key_priority < y->entry->key_priority ? -1 : 1;
	return x->position < y->position ? -1 : x->position > y->position;
}

static void
fwc_free(void *table)
{
	struct fwc_table *t = table;

	if (!t)
		return;
	rte_acl_free(t->acl);
	rte_free(t->data);
	rte_free(t);
}

/* Build with the small trie budget (max_size 0, as DPDK's type does), and if that does not fit
 * in 8 tries, with the large one (any non-zero max_size; the EAL's memory is the real bound, the
 * context is allocated from it). The ACL library logs the first failure as an error: it is
 * expected here, so its log is quietened for that attempt.
 */
static int
fwc_acl_build_tries(struct rte_acl_ctx *acl, const struct rte_acl_config *cfg)
{
	struct rte_acl_config large = *cfg;
	int level = rte_log_get_level(RTE_LOGTYPE_ACL), status;

	if (level > 0)
		rte_log_set_level(RTE_LOGTYPE_ACL, RTE_LOG_CRIT);
	status = rte_acl_build(acl, cfg);
	if (level > 0)
		rte_log_set_level(RTE_LOGTYPE_ACL, (uint32_t)level);
	if (!status)
		return 0;
	large.max_size = SIZE_MAX;
	return rte_acl_build(acl, &large);
}

/* The ACL context of `n` entries sorted by priority: rule i has ACL priority MAX - i (the ACL
 * prefers higher numbers) and returns i + 1 (0 is the ACL's miss).
 */
static struct rte_acl_ctx *
fwc_acl_build(const struct rte_swx_table_params *params, const struct fwc_layout *l,
	      const struct fwc_ranked *sorted, uint32_t n, int numa_node)
{
	size_t rule_size = RTE_ACL_RULE_SZ(l->cfg.num_fields);
	char name[RTE_ACL_NAMESIZE];
	struct rte_acl_param ap = {
		.name = name,
		.socket_id = numa_node,
		.rule_size = rule_size,
		.max_rule_num = n,
	};
	struct rte_acl_ctx *acl;
	uint8_t *rules;
	uint32_t i, j;
	int status;

	rules = calloc(n, rule_size);
	if (!rules)
		return NULL;
	for (i = 0; i < n; i++) {
		struct fwc_rule *r = (struct fwc_rule *)&rules[i * rule_size];

		r->data.category_mask = 1;
		r->data.priority = RTE_ACL_MAX_PRIORITY - (int32_t)i;
		r->data.userdata = i + 1;
		for (j = 0; j < l->cfg.num_fields; j++)
			fwc_rule_field(params, &l->fields[j], sorted[i].entry, &r->field[j]);
	}

	snprintf(name, sizeof(name), "fwc%u", ++fwc_counter);
	acl = rte_acl_create(&ap);
	status = acl ? rte_acl_add_rules(acl, (const struct rte_acl_rule *)rules, n) : -ENOMEM;
	free(rules);
	if (!status)
		status = fwc_acl_build_tries(acl, &l->cfg);
	if (status) {
		rte_acl_free(acl);
		return NULL;
	}
	return acl;
}

static void *
fwc_create(struct rte_swx_table_params *params, struct rte_swx_table_entry_list *entries,
	   const char *args __rte_unused, int numa_node)
{
	struct rte_swx_table_entry *entry;
	struct fwc_ranked *sorted = NULL;
	struct fwc_layout layout;
	struct fwc_table *t;
	uint32_t n = 0, i;

	if (!params || !params->key_size || fwc_layout_get(params, &layout))
		return NULL;
	if (entries)
		TAILQ_FOREACH(entry, entries, node)
			n++;
	if (n >= RTE_ACL_MAX_PRIORITY)
		return NULL;

	t = rte_zmalloc_socket("felix_wildcard", sizeof(*t), RTE_CACHE_LINE_SIZE, numa_node);
	if (!t)
		return NULL;
	t->entry_size = sizeof(uint64_t) + params->action_data_size;
	if (!n)
		return t;

	sorted = malloc(n * sizeof(*sorted));
	t->data = rte_zmalloc_socket("felix_wildcard", n * t->entry_size, RTE_CACHE_LINE_SIZE,
				     numa_node);
	if (!sorted || !t->data)
		goto error;
	i = 0;
	TAILQ_FOREACH(entry, entries, node) {
		sorted[i].entry = entry;
		sorted[i].position = i;
		i++;
	}
	qsort(sorted, n, sizeof(*sorted), fwc_entry_cmp);

	for (i = 0; i < n; i++) {
		uint8_t *d = &t->data[i * t->entry_size];

		memcpy(d, &sorted[i].entry->action_id, sizeof(uint64_t));
		if (params->action_data_size && sorted[i].entry->action_data)
			memcpy(d + sizeof(uint64_t), sorted[i].entry->action_data,
			       params->action_data_size);
	}
	t->acl = fwc_acl_build(params, &layout, sorted, n, numa_node);
	if (!t->acl)
		goto error;
	free(sorted);
	return t;

error:
	free(sorted);
	fwc_free(t);
	return NULL;
}

static uint64_t
fwc_mailbox_size_get(void)
{
	return 0;
}

static int
fwc_lookup(void *table, void *mailbox __rte_unused, uint8_t **key, uint64_t *action_id,
	   uint8_t **action_data, size_t *entry_id, int *hit)
{
	struct fwc_table *t = table;
	uint32_t match = 0;
	uint8_t *d;

	if (t->acl)
		rte_acl_classify(t->acl, (const uint8_t **)key, &match, 1, 1);
	*hit = match != 0;
	if (!match)
		return 1;
	d = &t->data[(size_t)(match - 1) * t->entry_size];
	memcpy(action_id, d, sizeof(*action_id));
	*action_data = d + sizeof(uint64_t);
	*entry_id = match - 1;
	return 1;
}

static struct rte_swx_table_ops fwc_ops = {
	.footprint_get = NULL,
	.mailbox_size_get = fwc_mailbox_size_get,
	.create = fwc_create,
	.add = NULL,
	.del = NULL,
	.lkp = fwc_lookup,
	.free = fwc_free,
};

/* Move `table` onto `type`: its object (empty at build time), its lookup function and mailbox
 * in every SWX thread. Nothing runs yet and the control plane does not exist yet.
 */
static int
fwc_table_move(struct rte_swx_pipeline *p, struct table *table, struct table_type *type)
{
	struct rte_swx_table_params params = {.match_type = RTE_SWX_TABLE_MATCH_WILDCARD};
	struct field *first = table->fields[0].field, *last = first;
	uint64_t mailbox_size = type->ops.mailbox_size_get();
	uint8_t *mask;
	void *obj;
	uint32_t i;

	for (i = 1; i < table->n_fields; i++) {
		struct field *f = table->fields[i].field;

		first = f->offset < first->offset ? f : first;
		last = f->offset > last->offset ? f : last;
	}
	params.key_offset = first->offset / 8;
	params.key_size = (last->offset + last->n_bits - first->offset) / 8;
	mask = calloc(1, params.key_size);
	if (!mask)
		return -ENOMEM;
	for (i = 0; i < table->n_fields; i++) {
		struct field *f = table->fields[i].field;

		memset(&mask[(f->offset - first->offset) / 8], 0xFF, f->n_bits / 8);
	}
	params.key_mask0 = mask;
	obj = type->ops.create(&params, NULL, table->args, p->numa_node);
	free(mask);
	if (!obj)
		return -EINVAL;

	for (i = 0; i < RTE_SWX_PIPELINE_THREADS_MAX; i++) {
		struct table_runtime *r = &p->threads[i].tables[table->id];
		void *mailbox = mailbox_size ? calloc(1, mailbox_size) : NULL;

		if (mailbox_size && !mailbox) {
			type->ops.free(obj);
			return -ENOMEM;
		}
		free(r->mailbox);
		r->mailbox = mailbox;
		r->func = type->ops.lkp;
	}
	table->type->ops.free(p->table_state[table->id].obj);
	p->table_state[table->id].obj = obj;
	table->type = type;
	return 0;
}

/* Register felix_wildcard on a built pipeline and move onto it every wildcard table whose spec
 * names it (DPDK resolved those to its own type: see the top of this section).
 */
static int
fwc_adopt(struct rte_swx_pipeline *p, char *err, size_t errlen)
{
	const struct pipeline_spec *spec = dlsym(p->lib, "pipeline_spec");
	struct table_type *type;
	uint32_t i;
	int status;

	if (!spec)
		return fail(err, errlen, -EINVAL, "the pipeline library has no pipeline_spec");
	status = rte_swx_pipeline_table_type_register(p, FWC_TYPE_NAME,
						      RTE_SWX_TABLE_MATCH_WILDCARD, &fwc_ops);
	if (status)
		return fail(err, errlen, status, "cannot register table type %s: %s",
			    FWC_TYPE_NAME, errno_text(status));
	TAILQ_FOREACH(type, &p->table_types, node)
		if (!strcmp(type->name, FWC_TYPE_NAME))
			break;

	for (i = 0; i < spec->n_tables; i++) {
		const struct table_spec *ts = &spec->tables[i];
		struct table *table;

		if (!ts->recommended_table_type_name ||
		    strcmp(ts->recommended_table_type_name, FWC_TYPE_NAME))
			continue;
		TAILQ_FOREACH(table, &p->tables, node)
			if (!strcmp(table->name, ts->name))
				break;
		/* As in DPDK, a named type of another match kind is ignored. */
		if (!table || !table->type || table->type == type ||
		    table->type->match_type != RTE_SWX_TABLE_MATCH_WILDCARD)
			continue;
		status = fwc_table_move(p, table, type);
		if (status)
			return fail(err, errlen, status,
				    "table %s: cannot create its %s object: %s (key wider than "
				    "%u ACL fields?)", table->name, FWC_TYPE_NAME,
				    errno_text(status), RTE_ACL_MAX_FIELDS);
	}
	return 0;
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

	status = fwc_adopt(x->p, err, errlen);
	if (status)
		goto error;

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
