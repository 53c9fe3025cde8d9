/* SPDX-License-Identifier: ISC */
/* The queue interface (docs/queue.md). Sessions see only this header; the filesystem backend
 * (queue_fs.c) is the embedded default, a PostgreSQL backend can sit behind the same calls.
 *
 * Return convention: every function that reports a status returns 0 or a positive errno value
 * (never -1 with errno); results come back through out-parameters or callbacks. The exceptions
 * are the opening functions (NULL with err filled and errno set) and the predicates (bool).
 *
 * Threading: every function is called from the event-loop thread except where noted.
 * queue_commit() does its durable work (fsync of file and directories) on worker threads and
 * reports back on the event loop through the callback. */
#ifndef ODMR_STORE_QUEUE_H
#define ODMR_STORE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct event_base;

enum { QUEUE_ID_MAX = 32 };   /* ids are [0-9A-Za-z] only, at most 31 chars */

enum queue_body_type { QUEUE_BODY_7BIT = 0, QUEUE_BODY_8BITMIME, QUEUE_BODY_BINARYMIME };

enum queue_rcpt_state {
    QUEUE_RCPT_PENDING = 0,   /* not yet delivered; may carry attempts and the last 4xx reply */
    QUEUE_RCPT_DONE,          /* customer answered 250: delivered */
    QUEUE_RCPT_FAILED,        /* permanent failure (5xx) whose failed notice is still owed */
    QUEUE_RCPT_BOUNCED,       /* permanent failure (5xx or expiry), its failed notice committed
                                 to the queue (or none owed): final, like DONE */
    QUEUE_RCPT_STATE_LAST = QUEUE_RCPT_BOUNCED,
    QUEUE_OUTCOME_WARNED,     /* not a state, only a queue_outcome: sets the delay-warning mark
                                 of a PENDING recipient (no attempt counted; EALREADY when it
                                 is no longer pending) */
};

struct queue_rcpt {
    char *address;            /* forward-path without angle brackets, as received */
    char *domain;             /* lower-case hosted domain this recipient is held for */
    char *notify;             /* RFC 3461 NOTIFY value as received, or NULL */
    char *orcpt;              /* RFC 3461 ORCPT value (addr-type;xtext), or NULL */
    /* state, filled by queue_open()/queue_domain_rcpts(); ignored by queue_put() */
    enum queue_rcpt_state state;
    unsigned attempts;
    time_t last_attempt;
    char *last_reply;         /* last reply from the customer, or NULL */
    bool warned;              /* its delay warning ([queue] delay_warning) was committed */
};

struct queue_envelope {
    char id[QUEUE_ID_MAX];    /* set by queue_put() */
    time_t arrival;           /* set by queue_put() */
    char *sender;             /* reverse-path without brackets; "" for the null path <> */
    enum queue_body_type body;
    bool smtputf8;
    char *ret;                /* RFC 3461 RET (FULL|HDRS) or NULL */
    char *envid;              /* RFC 3461 ENVID (xtext) or NULL */
    uint64_t declared_size;   /* MAIL SIZE= or 0 */
    char *helo;               /* client's EHLO/HELO/LHLO argument */
    char *client_addr;        /* client IP address */
    char *protocol;           /* "ESMTP", "ESMTPS", "LMTP", "SMTP" ... */
    size_t rcpt_count;
    struct queue_rcpt *rcpts;
    uint64_t body_size;       /* set by queue_open(): octets of the stored message */
};

struct queue;
struct queue_writer;

/* Opens (creating if needed) the queue at spool; runs start-up recovery (removes uncommitted
 * leftovers, moves corrupt files to corrupt/, rebuilds missing domain index entries) and starts
 * worker_count commit threads. base may be NULL for tools that never commit (odmrctl).
 * On failure returns NULL with a message in err. */
struct queue *queue_open_fs(const char *spool, struct event_base *base, unsigned worker_count,
                            char *err, size_t errlen);
/* For tools (odmrctl): opens an existing spool and creates nothing -- a missing spool or
 * subdirectory fails with errno ENOENT. Runs no recovery, takes no lock. read_only: nothing is
 * ever written: a message that fails validation or a damaged index entry is logged and left in
 * place for odmrd (queue_message_open still returns EBADMSG; the entry's recipients read as
 * pending), and every update returns EROFS. NULL on failure with errno set and err filled. */
struct queue *queue_open_fs_existing(const char *spool, bool read_only, char *err, size_t errlen);
void queue_close(struct queue *q);   /* waits for in-flight commits */

/* Starts a new message: assigns env->id and env->arrival and stores a writer in *out. 0 or an
 * errno (ENOSPC, EIO, EINVAL for a bad domain, EROFS ...; *out is then NULL). */
int queue_put(struct queue *q, struct queue_envelope *env, struct queue_writer **out);
/* Appends message octets (CRLF line endings, already dot-unstuffed). 0 or errno; the first
 * error is sticky (every later write and the commit fail with it). */
int queue_write(struct queue_writer *w, const void *data, size_t len);
/* Throws the message away; nothing of it remains. Frees w. */
void queue_abort(struct queue_writer *w);

/* Makes the message durable and visible. status is 0 when the message is committed (the
 * caller may now say 250), or an errno value (nothing of the message remains).
 * The callback runs on the event-loop thread; w is freed by the queue after it returns. */
typedef void (*queue_commit_cb)(int status, const char *id, void *arg);
void queue_commit(struct queue_writer *w, queue_commit_cb cb, void *arg);

/* ---- reading and updating (used by the ODMR push and odmrctl) ---- */

/* Calls fn(id, arg) for each message held for domain that still has pending recipients of
 * that domain, oldest first. Does not scan messages of other domains. 0 or errno (EINVAL: not
 * a domain name); the listing functions below return the same. */
typedef int (*queue_id_fn)(const char *id, void *arg);   /* non-zero return stops */
int queue_list_domain(struct queue *q, const char *domain, queue_id_fn fn, void *arg);
/* Every message id in the queue. */
int queue_list_all(struct queue *q, queue_id_fn fn, void *arg);
/* Domains that have index entries. */
int queue_list_domains(struct queue *q, queue_id_fn fn, void *arg);

struct queue_message {
    struct queue_envelope env;   /* with per-recipient state filled in */
    int fd;                      /* read-only, positioned at the first message octet */
    off_t body_offset;
};
/* Opens and validates a committed message (version, checksum). A file that fails validation
 * is moved to corrupt/, logged, and ENOENT-like error EBADMSG returned. */
int queue_message_open(struct queue *q, const char *id, struct queue_message **out);
void queue_message_close(struct queue_message *m);
/* The same opening for n messages at once, on the queue's workers: the SHA-256 check reads
 * each whole file, which must not stall the event loop (docs/queue.md "Opening for a push").
 * cb runs on the event-loop thread once per request, in order, with its arg: 0 and the message
 * (the callee closes it), or an errno as queue_message_open() returns it and NULL. Never from
 * inside this call, except without an event base (then inline) or without memory (ENOMEM). */
struct queue_open_request {
    const char *id;
    void *arg;
};
typedef void (*queue_message_open_cb)(int status, struct queue_message *m, void *arg);
void queue_messages_open_async(struct queue *q, const struct queue_open_request *req, size_t n,
                               queue_message_open_cb cb);

/* Removes the message when every recipient is DONE or BOUNCED (a FAILED one still owes its
 * notice and keeps the message). 0 or errno; *removed (may be NULL) tells whether it went. */
int queue_remove_if_finished(struct queue *q, const char *id, bool *removed);
/* One recipient's outcome, for queue_record_outcomes_async(). reply may be NULL; it is copied. */
struct queue_outcome {
    size_t rcpt_index;
    enum queue_rcpt_state state;
    const char *reply;
};
/* status: 0, or the first error (EALREADY: a recipient was already final and was skipped; the
 * others were recorded). removed: 1 when the message was removed. */
typedef void (*queue_outcomes_cb)(int status, int removed, const char *id, void *arg);
/* Records the outcome of n recipients of one message durably (fsync before cb) plus, when
 * remove_if_finished, queue_remove_if_finished() -- run on the commit workers, never blocking
 * the event loop on fsync. Each touched domain entry is rewritten once. cb runs on the event-loop thread and never
 * from inside this call (without an event base the work runs inline and cb is called before
 * this returns). Updates of the same message run one at a time in submission order. */
void queue_record_outcomes_async(struct queue *q, const char *id,
                                 const struct queue_outcome *outcomes, size_t n,
                                 bool remove_if_finished, queue_outcomes_cb cb, void *arg);
/* Like queue_record_outcomes_async() for a message opened by queue_messages_open_async(): the
 * envelope and states read at the opening are used instead of being read again (an index entry
 * that changed since is read again). m may be closed as soon as this returns. */
void queue_record_message_outcomes_async(struct queue *q, const struct queue_message *m,
                                         const struct queue_outcome *outcomes, size_t n,
                                         bool remove_if_finished, queue_outcomes_cb cb,
                                         void *arg);
/* Unconditional removal (odmrctl queue delete). */
int queue_remove(struct queue *q, const char *id);

/* Domain leases: at most one delivering session per domain. Backed by flock() so a crash
 * leaves no stale lease. Returns 0, or EBUSY when another session holds it. */
int queue_lease_domain(struct queue *q, const char *domain);
void queue_release_domain(struct queue *q, const char *domain);

/* Calls fn for every message older than max_age seconds (for expiry and bounces). */
int queue_expire_scan(struct queue *q, time_t max_age, queue_id_fn fn, void *arg);

/* ---- operator control (odmrctl queue hold/release/requeue; docs/queue.md "Hold") ---- */

/* Puts a message on hold (held = true) or releases it. A held message is not listed for a
 * push (queue_list_domain) nor for expiry (queue_expire_scan), and every later step checks
 * queue_is_held() again after taking its domain leases. The mark is a file hold/<id>, created
 * or removed and then made durable (fsync of hold/) before this returns. 0, ENOENT (no such
 * message; a release of a gone message still removes a stale mark), EALREADY (already in that
 * state), EROFS or an errno. */
int queue_hold(struct queue *q, const char *id, bool held);
bool queue_is_held(struct queue *q, const char *id);
/* Like queue_list_domain, held messages included (odmrctl). */
int queue_list_domain_with_held(struct queue *q, const char *domain, queue_id_fn fn, void *arg);
/* Every FAILED recipient of the message back to PENDING (its notice no longer owed; attempts
 * and last reply kept). *count: how many. 0, ENOENT, EROFS or an errno. */
int queue_requeue(struct queue *q, const char *id, size_t *count);
/* What the queue holds for domain: messages with an index entry there, the size of their queue
 * files in octets (only with sizes: else no file is looked at, bytes is 0) and the arrival of
 * the oldest (from its id; 0 when none). 0 or an errno (EINVAL: not a domain name). */
struct queue_usage {
    uint64_t messages, bytes;
    time_t oldest;
};
int queue_domain_usage(struct queue *q, const char *domain, bool sizes, struct queue_usage *out);

void queue_envelope_clear(struct queue_envelope *env);   /* frees the strings inside */
/* Calls fn for each distinct recipient domain of env, in envelope order; stops at the first
 * non-zero return of fn and returns it. */
int queue_envelope_for_each_domain(const struct queue_envelope *env,
                                   int (*fn)(const char *domain, void *arg), void *arg);

#endif
