/* SPDX-License-Identifier: ISC */
/* SMTP/LMTP server engine: sessions, their connection and I/O, states, deadlines, limits,
 * half-close, shutdown, and the hand-off of a connection (detach). The command table is in
 * smtp_server_cmds.c, message octets in smtp_server_data.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>

#include "engines/smtp_server_internal.h"
#include "lib/log.h"
#include "platform/admission.h"
#include "platform/tls.h"
#include "services/metrics.h"   /* the one service every layer may call, like lib/log */

static const char *const state_names[] = {
    [STATE_GREETING] = "greeting", [STATE_READY] = "ready",   [STATE_MAIL] = "mail",
    [STATE_RCPT] = "rcpt",         [STATE_DATA] = "data",     [STATE_COMMITTING] = "committing",
    [STATE_CLOSING] = "closing",   [STATE_RCPT_WAIT] = "rcpt_wait",
    [STATE_CHUNK] = "chunk",       [STATE_PAUSED] = "paused", [STATE_DETACHED] = "detached",
};

/* The event names with the server's prefix: "session.start", "odmr.start" ... */
static void name_events(struct smtp_server *server)
{
    static const char *const suffix[SEV_COUNT] = {
        [SEV_START] = "start", [SEV_END] = "end", [SEV_TIMEOUT] = "timeout", [SEV_REFUSED] = "refused"};
    const char *prefix = server->settings.log_prefix ? server->settings.log_prefix : "session";
    for (int i = 0; i < SEV_COUNT; i++)
        snprintf(server->events[i], sizeof server->events[i], "%s.%s", prefix, suffix[i]);
}


/* One transition function, so every state change is logged in one place. */
void enter_state(struct smtp_session *s, enum session_state next)
{
    log_debug("session.state", " session=%s from=%s to=%s", s->id, state_names[s->state],
              state_names[next]);
    s->state = next;
}

/* The bufferevent's read timeout is data_timeout only, the per-block inactivity timeout inside
 * DATA/BDAT; commands have their deadline (update_deadline), which octets do not restart. */
void set_io_timeouts(struct smtp_session *s, bool data)
{
    struct timeval tv = {data ? limits(s)->data_timeout : limits(s)->command_timeout, 0};
    bufferevent_set_timeouts(s->bev, data ? &tv : NULL, &tv);
}

void transaction_clear(struct smtp_transaction *t)
{
    free(t->sender);
    free(t->ret);
    free(t->envid);
    for (size_t i = 0; i < t->rcpt_count; i++) {
        free(t->rcpts[i].address);
        free(t->rcpts[i].domain);
        free(t->rcpts[i].notify);
        free(t->rcpts[i].orcpt);
    }
    free(t->rcpts);
    memset(t, 0, sizeof *t);
}

void abort_message(struct smtp_session *s)
{
    if (s->data == NULL)
        return;
    if (hooks(s)->data_abort != NULL)
        hooks(s)->data_abort(hooks_ctx(s), s);
    free(s->data);
    s->data = NULL;
}

/* A hook's answer is awaited: the hook's owner still holds a pointer to the session. */
bool awaiting_hook(const struct smtp_session *s)
{
    return s->state == STATE_COMMITTING || s->state == STATE_RCPT_WAIT;
}

/* Not ready for the next command: a hook's or a paused service verb's reply is still owed. */
static bool held(const struct smtp_session *s)
{
    return awaiting_hook(s) || s->state == STATE_PAUSED;
}

void reset_transaction(struct smtp_session *s)
{
    abort_message(s);
    transaction_clear(&s->txn);
    if (s->state == STATE_MAIL || s->state == STATE_RCPT || s->state == STATE_DATA)
        enter_state(s, STATE_READY);
}

void free_rcpt(struct smtp_txn_rcpt *r)
{
    free(r->address);
    free(r->domain);
    free(r->notify);
    free(r->orcpt);
}

/* ---- session lifetime ---- */

static void maybe_idle(struct smtp_server *server)
{
    if (server->shutting_down && server->session_count + server->detached_count == 0 &&
        server->on_idle)
        server->on_idle(server->on_idle_arg);
}

/* The session leaves the unauthenticated count (AUTH succeeded, or it ends). */
static void leave_unauthenticated(struct smtp_session *s)
{
    if (s->unauthenticated_counted)
        peer_count_release(s->server->settings.unauthenticated, s->peer_key);
    s->unauthenticated_counted = false;
}

/* ---- replies on a plain socket ---- */

/* The output has drained: input held back for it (OUTPUT_HIGH_WATER) goes on. */
static void resume_after_drain(struct smtp_session *s)
{
    if (!s->output_blocked)
        return;
    s->output_blocked = false;
    process_input(s);
}

/* A socket bufferevent writes when its write event fires: each reply cost an epoll_ctl to add
 * that event, an epoll_wait to see the socket writable, the write, and an epoll_ctl to remove
 * the event again (docs/architecture.md, "Replies on a plain socket"). On a plain socket the
 * session writes its replies itself instead: a reply added to the output schedules
 * send_replies() for the end of the callback that made it (so pipelined replies still leave
 * in one write, RFC 2920 3.2), and the bufferevent's write event is enabled only when the
 * socket did not take everything: the bufferevent then writes the rest, reports a write error
 * (on_event) and times out as it always did. TLS sessions leave all writing to their layer. */
static void send_replies(struct smtp_session *s)
{
    struct evbuffer *out = output(s);
    if (evbuffer_get_length(out) == 0 || (bufferevent_get_enabled(s->bev) & EV_WRITE))
        return;   /* nothing to send, or the bufferevent sends it (socket full, closing) */
    /* The socket bufferevent keeps its output's start frozen except while it writes itself. */
    evbuffer_unfreeze(out, 1);
    evbuffer_write(out, bufferevent_getfd(s->bev));
    evbuffer_freeze(out, 1);
    if (evbuffer_get_length(out) > 0) {
        bufferevent_enable(s->bev, EV_WRITE);   /* full, or failed: the bufferevent goes on */
        return;
    }
    resume_after_drain(s);
}

static void on_send_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    send_replies(arg);
}

static void on_output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info,
                            void *arg)
{
    (void)buf;
    struct smtp_session *s = arg;
    if (info->n_added > 0)
        event_active(s->send_event, 0, 0);
}

/* A new plain session writes its own replies (a bufferevent starts with writing enabled).
 * Without memory for it, the bufferevent writes them, as on TLS. */
static void direct_replies_start(struct smtp_session *s)
{
    if (s->tls_active || bufferevent_getfd(s->bev) < 0 ||
        evbuffer_get_length(output(s)) > 0)
        return;
    s->send_event = event_new(s->server->base, -1, 0, on_send_event, s);
    if (s->send_event != NULL)
        s->output_watch = evbuffer_add_cb(output(s), on_output_added, s);
    if (s->output_watch == NULL) {
        if (s->send_event != NULL)
            event_free(s->send_event);
        s->send_event = NULL;
        return;
    }
    bufferevent_disable(s->bev, EV_WRITE);
}

/* Back to the bufferevent writing everything: before STARTTLS puts TLS on the socket and
 * before the connection is handed on (hand_back: what is waiting is sent first, then the
 * bufferevent writes for the next owner), and when the session ends. */
static void direct_replies_stop(struct smtp_session *s, bool hand_back)
{
    if (s->send_event == NULL)
        return;
    if (hand_back)
        send_replies(s);
    evbuffer_remove_cb_entry(output(s), s->output_watch);
    event_free(s->send_event);
    s->send_event = NULL;
    s->output_watch = NULL;
    if (hand_back)
        bufferevent_enable(s->bev, EV_WRITE);
}

void smtp_session_end_direct_replies(struct smtp_session *s)
{
    direct_replies_stop(s, true);
}

/* A detached session keeps its slot and its peer's count (smtp_server_detached_end) and its
 * connection (the new owner's), and its service heard of the end from the detach itself. */
static void session_free(struct smtp_session *s)
{
    /* A hook that answered at once, inside the handler process_input() called, may end the
     * session (the peer went meanwhile): the running process_input() frees it on return. */
    if (s->processing) {
        s->free_deferred = true;
        return;
    }
    struct smtp_server *server = s->server;
    bool detached = s->state == STATE_DETACHED;
    if (!detached && hooks(s)->session_closed != NULL)
        hooks(s)->session_closed(hooks_ctx(s), s);
    abort_message(s);
    transaction_clear(&s->txn);
    free_rcpt(&s->pending_rcpt);
    line_reader_free(&s->reader);
    deadline_free(&s->deadline);
    leave_unauthenticated(s);
    if (!detached)
        peer_count_release(server->settings.peers, s->peer_key);
    if (s->bev) {
        direct_replies_stop(s, false);
        tls_bufferevent_close(s->bev);
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        server->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    server->session_count -= !detached;   /* a detached one was moved to detached_count */
    if (!detached) {   /* else its end is counted and logged by smtp_server_detached_end() */
        metrics_session_closed(server->settings.role);
        log_info(server->events[SEV_END], " session=%s role=%s", s->id, server->settings.role);
    }
    free(s);
    maybe_idle(server);
}

static void on_event(struct bufferevent *bev, short events, void *arg);

static void on_flushed_then_close(struct bufferevent *bev, void *arg)
{
    struct smtp_session *s = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        session_free(s);
}

/* Sends what is queued, then closes. A session waiting for its commit is freed by the
 * commit callback instead (the store still holds a pointer to it). */
void close_after_flush(struct smtp_session *s)
{
    s->closed_by_server = !s->quit_received;
    abort_message(s);
    if (awaiting_hook(s)) {
        s->peer_gone = true;
        return;
    }
    enter_state(s, STATE_CLOSING);
    bufferevent_disable(s->bev, EV_READ);
    /* The last reply gets at most CLOSE_FLUSH_MAX seconds (the command timeout if shorter) to
     * leave, on a timer of our own: a client that is gone or never reads again (or a TLS
     * client that never finished its handshake, when a bufferevent's timeouts do not run) no
     * longer keeps the session forever. A write error ends it at once (on_event). EV_WRITE
     * again: a write timeout may just have disabled it. */
    bufferevent_setcb(s->bev, NULL, on_flushed_then_close, on_event, s);
    bufferevent_set_timeouts(s->bev, NULL, NULL);
    bufferevent_enable(s->bev, EV_WRITE);
    deadline_start(&s->deadline, DEADLINE_CLOSE, limits(s)->command_timeout < CLOSE_FLUSH_MAX
                   ? limits(s)->command_timeout : CLOSE_FLUSH_MAX, 0);
    /* Freed from the (deferred) write callback, never from inside this call: the caller
     * (process_input) still uses s, and a TLS bufferevent may have flushed the reply already. */
    bufferevent_trigger(s->bev, EV_WRITE, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

void count_error(struct smtp_session *s)
{
    if (++s->errors < limits(s)->max_errors)
        return;
    log_warn("session.too_many_errors", " session=%s peer=%s errors=%u", s->id, s->peer,
             s->errors);
    reply_send(output(s), 421, "4.7.0", "%s Too many errors, closing the connection",
               s->server->settings.hostname);
    close_after_flush(s);
}

/* A hook's reply. RFC 5321 3.8: after a 421 the server closes the connection; a hook answers
 * 421 when it can serve nothing more (odmr-client: its local target is gone). */
void write_hook_reply(struct smtp_session *s, const struct smtp_reply *reply)
{
    reply_write(output(s), reply);
    if (reply->code == 421)
        s->close_after_reply = true;
}

void reply_error(struct smtp_session *s, int code, const char *enhanced, const char *text)
{
    reply_send(output(s), code, enhanced, "%s", text);
    count_error(s);
}

/* The connection failed while a hook worked (RCPT check, store): nothing can be answered
 * any more; the outcome stays in the hook's own log. Returns true when the session is gone. */
bool free_if_peer_gone(struct smtp_session *s)
{
    if (!s->peer_gone)
        return false;
    s->state = STATE_CLOSING;
    session_free(s);
    return true;
}

/* After a hook's reply: the commands that waited in the input buffer go on, and reading
 * again unless the client has ended its input (its end is then handled by process_input). */
void resume_after_hook(struct smtp_session *s)
{
    if (s->server->shutting_down) {
        reply_send(output(s), 421, "4.3.2", "%s Service shutting down",
                   s->server->settings.hostname);
        close_after_flush(s);
        return;
    }
    if (!s->input_ended)
        bufferevent_enable(s->bev, EV_READ);
    process_input(s);
}

/* RFC 5321 4.5.3.2: server timeouts are per command, not per octet. A command line must come
 * whole within command_timeout from when the server was ready for it (line_taken: the last one
 * was just taken); a message (DATA, or BDAT chunks and the lines between) within data_timeout +
 * octets/min_data_rate s, data_timeout staying the per-block timeout (4.5.3.2.6) as well. */
static void update_deadline(struct smtp_session *s, bool line_taken)
{
    const struct smtp_limits *l = limits(s);
    enum deadline_kind kind = deadline_kind(&s->deadline);
    if (s->state == STATE_CLOSING)
        return;   /* the close deadline runs */
    if (held(s))   /* a hook or a paused service verb works: the server is not ready */
        deadline_stop(&s->deadline);
    else if (s->data != NULL || s->state == STATE_DATA || s->state == STATE_CHUNK) {
        if (kind != DEADLINE_MESSAGE)   /* min_data_rate 0: none, only the per-block timeout */
            deadline_start(&s->deadline, l->min_data_rate ? DEADLINE_MESSAGE : DEADLINE_NONE,
                           l->data_timeout, l->min_data_rate);
    } else if (kind == DEADLINE_HANDSHAKE && !tls_handshake_done(s->bev)) {
        return;   /* STARTTLS: the handshake deadline runs until the handshake is done */
    } else if (line_taken || kind != DEADLINE_COMMAND) {
        deadline_start(&s->deadline, DEADLINE_COMMAND, l->command_timeout, 0);
    }
}

static void on_deadline(void *arg, enum deadline_kind kind)
{
    struct smtp_session *s = arg;
    if (kind == DEADLINE_HANDSHAKE && tls_handshake_done(s->bev)) {
        update_deadline(s, true);   /* EHLO is due within command_timeout from now */
        return;
    }
    log_info(s->server->events[SEV_TIMEOUT], " session=%s peer=%s state=%s deadline=%s", s->id,
             s->peer,
             state_names[s->state], deadline_kind_name(kind));
    s->closed_by_server = s->closed_by_server || kind != DEADLINE_CLOSE;
    if (kind == DEADLINE_HANDSHAKE || kind == DEADLINE_CLOSE) {
        session_free(s);   /* nothing can be said without TLS up, or it cannot leave */
        return;
    }
    reply_send(output(s), 421, "4.4.2", "%s Timeout, closing", s->server->settings.hostname);
    close_after_flush(s);   /* a message under way is dropped (state=data above) */
}

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);

time_t handshake_timeout(const struct smtp_session *s)
{
    return limits(s)->tls_handshake_timeout ? limits(s)->tls_handshake_timeout
                                            : limits(s)->command_timeout;
}

/* Hands s->bev (new, adopted, or the TLS layer after STARTTLS) to the session's callbacks. */
void start_reading(struct smtp_session *s)
{
    bufferevent_setcb(s->bev, on_read, on_write, on_event, s);
    bufferevent_setwatermark(s->bev, EV_READ, 0, INPUT_HIGH_WATER);
    set_io_timeouts(s, false);
    bufferevent_enable(s->bev, s->send_event != NULL ? EV_READ : EV_READ | EV_WRITE);
    update_deadline(s, true);
}

/* Everything the client sent before ending its input has been processed: the session closes
 * once the replies have left (the closing timer bounds that), as ended by the client. A
 * transaction it did not finish is dropped. Nothing to do when a close is already under way. */
static void close_at_end_of_input(struct smtp_session *s)
{
    if (s->state == STATE_CLOSING)
        return;
    if (s->state == STATE_DATA || s->state == STATE_CHUNK)
        log_info("message.aborted", " session=%s peer=%s reason=disconnect", s->id, s->peer);
    close_after_flush(s);
    s->closed_by_server = false;
}

/* Takes one line out of the input: a message line, a line a service took (an AUTH exchange's
 * response), or a command. false when no complete line is buffered. */
static bool take_line(struct smtp_session *s, struct evbuffer *in)
{
    struct line line;
    if (s->state == STATE_DATA && !s->reader.skipping &&
        data_take_plain_lines(s, in, s->reader.limit))
        return true;
    enum line_status status = line_reader_next(&s->reader, in, &line);
    if (status == LINE_AGAIN)
        return false;
    if (status == LINE_TOO_LONG && s->state == STATE_DATA) {
        s->data->line_too_long = true;
        s->data->previous_line_crlf = !line.bare_lf;
    } else if (s->state == STATE_DATA) {
        data_line(s, &line);
    } else if (s->line_taker != NULL) {
        s->line_taker(s->line_taker_ctx, s, status == LINE_TOO_LONG ? NULL : line.text);
    } else if (status == LINE_TOO_LONG) {
        reply_error(s, 500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.4: 512 octets)");
    } else {
        command_line(s, &line);
    }
    return true;
}

static bool stops_input(const struct smtp_session *s)
{
    return held(s) || s->state == STATE_CLOSING || s->state == STATE_DETACHED ||
           s->free_deferred;
}

static void take_buffered_input(struct smtp_session *s);

/* A hook may answer at once, inside the handler that called it (a commit run inline, the
 * fuzz target's synchronous hooks): its resume_after_hook() lands here again. The call
 * already running goes on by itself (its loop sees the session no longer held); running a
 * second one on the stack let the inner one free the session under the outer one. */
void process_input(struct smtp_session *s)
{
    if (s->processing)
        return;
    s->processing = true;
    take_buffered_input(s);
    s->processing = false;
    if (s->free_deferred) {
        session_free(s);
        return;
    }
    if (s->state == STATE_DETACHED) {
        session_free(s);   /* a handler handed the connection on; the rest of the input too */
        return;
    }
    if (s->state == STATE_DATA && s->data != NULL)
        flush_stage(s);
    if (s->input_ended && !held(s) && !s->output_blocked)
        close_at_end_of_input(s);
}

static void take_buffered_input(struct smtp_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    update_deadline(s, false);
    while (!stops_input(s)) {
        if (s->close_after_reply) {
            close_after_flush(s);
            break;
        }
        if (evbuffer_get_length(output(s)) >= OUTPUT_HIGH_WATER) {
            s->output_blocked = true;   /* on_write() goes on once the replies have left */
            break;
        }
        if (s->state == STATE_CHUNK) {
            read_chunk(s, in);
            update_deadline(s, false);
            if (s->state == STATE_CHUNK)
                break;
            continue;
        }
        if (!take_line(s, in) || s->state == STATE_DETACHED || s->free_deferred)
            break;
        update_deadline(s, true);
    }
}

/* libevent 2.1 reads at most 4096 octets per read callback (EVBUFFER_MAX_READ; 2.2 makes it
 * settable): a 100 KiB message took 25 callbacks, each with an ioctl, a readv and an
 * epoll_wait. On a plain socket one more read here takes what else is waiting, straight into
 * the input buffer and never past its high-water mark. The socket bufferevent keeps its
 * input's end frozen except while it reads itself, hence the unfreeze. EOF and errors are left
 * for the bufferevent's own next read to report. */
static void read_more(struct smtp_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->bev);
    evutil_socket_t fd = bufferevent_getfd(s->bev);
    size_t have = evbuffer_get_length(in);
    /* Under 4096 octets in the buffer, the bufferevent's read took all there was: another
     * read would only return EAGAIN (one wasted syscall per command line). */
    if (s->tls_active || fd < 0 || have < EVBUFFER_READ_CAP || have >= INPUT_HIGH_WATER)
        return;
    size_t want = INPUT_HIGH_WATER - have < READ_MORE ? INPUT_HIGH_WATER - have : READ_MORE;
    struct evbuffer_iovec v[2];
    struct iovec iov[2];
    evbuffer_unfreeze(in, 0);
    int n = evbuffer_reserve_space(in, (ev_ssize_t)want, v, 2);
    size_t room = 0;
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len < want - room ? v[i].iov_len : want - room;
        room += iov[i].iov_len;
    }
    ssize_t got = n > 0 ? readv(fd, iov, n) : -1;
    if (got > 0) {
        size_t left = (size_t)got;
        int used = 0;
        for (; used < n && left > 0; used++) {
            v[used].iov_len = iov[used].iov_len < left ? iov[used].iov_len : left;
            left -= v[used].iov_len;
        }
        evbuffer_commit_space(in, v, used);
    }
    evbuffer_freeze(in, 0);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    read_more(arg);
    process_input(arg);
}

/* The output has drained (write low watermark 0): input held back for it goes on. Only then,
 * so a TLS bufferevent calling back from inside a write never re-enters process_input(). */
static void on_write(struct bufferevent *bev, void *arg)
{
    struct smtp_session *s = arg;
    if (s->send_event != NULL)
        bufferevent_disable(bev, EV_WRITE);   /* drained: send_replies() writes again */
    resume_after_drain(s);
}

/* Replies the client has earned and not yet been sent: a hook's answer to come, commands
 * held back until earlier replies drain, replies still in the output buffer. */
static bool replies_owed(struct smtp_session *s)
{
    return tls_can_write(s->bev) &&
           (held(s) || s->output_blocked || evbuffer_get_length(output(s)) > 0);
}

/* The client ended its sending side (a FIN, or a TLS close_notify: either end may close its
 * writing direction first and still read; docs/architecture.md, "the client half-closes"),
 * or reading failed. RFC 5321 4.1.1.5: treated as if QUIT had been received, so what it sent
 * before still gets its replies: a pending hook's answer, then the pipelined commands already
 * received (4.1.1.10: QUIT gets its 221 before the close), then the session closes after the
 * flush. A write error (on_event) or the closing timer ends it if the socket takes no more. */
static void input_ended(struct smtp_session *s)
{
    s->input_ended = true;
    s->ended_in_txn = s->txn.active;
    bufferevent_disable(s->bev, EV_READ);
    if (!held(s) && !s->output_blocked)
        close_at_end_of_input(s);
}

static void on_event(struct bufferevent *bev, short events, void *arg)
{
    struct smtp_session *s = arg;
    /* Before the handshake ends only the handshake deadline speaks: a bufferevent timeout
     * (command_timeout, never shorter than the handshake's) that wins the tie is the same
     * deadline, and nothing can be said to a peer without TLS up (RFC 3207 4.2). */
    if ((events & BEV_EVENT_TIMEOUT) && deadline_kind(&s->deadline) == DEADLINE_HANDSHAKE &&
        !tls_handshake_done(s->bev)) {
        on_deadline(s, DEADLINE_HANDSHAKE);
        return;
    }
    if (events & BEV_EVENT_TIMEOUT) {
        log_info(s->server->events[SEV_TIMEOUT], " session=%s peer=%s state=%s", s->id, s->peer,
                 state_names[s->state]);
        if (s->state == STATE_CLOSING) {
            session_free(s);
            return;
        }
        reply_send(output(s), 421, "4.4.2", "%s Timeout, closing", s->server->settings.hostname);
        close_after_flush(s);
        return;
    }
    if (!(events & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    if (!(events & BEV_EVENT_WRITING) && replies_owed(s)) {
        input_ended(s);
        return;
    }
    if (s->state == STATE_DATA)
        log_info("message.aborted", " session=%s peer=%s reason=disconnect", s->id, s->peer);
    abort_message(s);
    if (awaiting_hook(s)) {
        s->peer_gone = true;
        return;
    }
    session_free(s);
}

/* ---- server ---- */

struct smtp_server *smtp_server_new(struct event_base *base,
                                    const struct smtp_server_settings *settings)
{
    struct smtp_server *server = calloc(1, sizeof *server);
    if (server == NULL)
        return NULL;
    server->base = base;
    server->settings = *settings;
    name_events(server);
    return server;
}

int smtp_server_register(struct smtp_server *server, const struct smtp_server_command *cmd)
{
    if (server->registered_count == REGISTERED_MAX)
        return -1;
    server->registered[server->registered_count++] = *cmd;
    return 0;
}

static char id_letter(const struct smtp_server *server)
{
    if (server->settings.id_letter != '\0')
        return server->settings.id_letter;
    return server->settings.mode == SMTP_SERVER_LMTP ? 'L' : 'S';
}

/* A session on bev; NULL on failure (bev not freed). */
static struct smtp_session *session_new(struct smtp_server *server, struct bufferevent *bev,
                                        const char *peer)
{
    struct smtp_session *s = bev ? calloc(1, sizeof *s) : NULL;
    if (s == NULL || deadline_init(&s->deadline, server->base, on_deadline, s) != 0) {
        free(s);
        return NULL;
    }
    s->bev = bev;
    s->server = server;
    snprintf(s->id, sizeof s->id, "%c%lx", id_letter(server), ++server->next_id);
    snprintf(s->peer, sizeof s->peer, "%s", peer);
    line_reader_init(&s->reader, COMMAND_LINE_MAX);
    s->next = server->sessions;
    if (s->next)
        s->next->prev = s;
    server->sessions = s;
    server->session_count++;
    metrics_session_opened(server->settings.role);
    return s;
}

/* RFC 5321 3.8: over max_sessions (421 4.3.2), the address's share or its share of sessions
 * not yet authenticated (421 4.7.0), refused; say: the reply can be written (not before an
 * implicit TLS handshake). */
static bool admit(struct smtp_server *server, evutil_socket_t fd, const char *peer_text,
                  const char *key, bool say)
{
    const struct smtp_server_settings *c = &server->settings;
    const struct admission_rule rules[] = {
        {server->shutting_down ||
             server->session_count + server->detached_count >= c->max_sessions ||
             (!say && c->tls == NULL), NULL, 0,
         "max_sessions", "421 4.3.2 Too many sessions, try again later\r\n"},
        {false, c->peers, c->max_sessions_per_address, "max_sessions_per_address",
         "421 4.7.0 Too many connections from your address, try again later\r\n"},
        {false, c->unauthenticated, c->max_unauthenticated_per_address,
         "max_unauthenticated_per_address",
         "421 4.7.0 Too many unauthenticated connections from your address, try again later\r\n"},
    };
    const char *reason = admission_check(fd, key, rules, c->unauthenticated ? 3 : 2, say);
    if (reason != NULL)
        log_warn(server->events[SEV_REFUSED], " peer=%s role=%s reason=%s", peer_text, c->role,
                 reason);
    return reason == NULL;
}

static void send_greeting(struct smtp_session *s)
{
    const struct smtp_server_settings *c = &s->server->settings;
    reply_send(output(s), 220, NULL, "%s %s", c->hostname,
               c->greeting ? c->greeting : c->mode == SMTP_SERVER_LMTP ? "LMTP odmrd"
                                                                       : "ESMTP odmrd");
}

static void accept_connection(struct smtp_server *server, evutil_socket_t fd,
                              const struct sockaddr *peer, int peer_len, bool tls)
{
    char peer_text[64], key[PEER_KEY_MAX];
    listen_peer_text(peer, peer_len, peer_text, sizeof peer_text);
    listen_peer_key(peer, peer_len, key, sizeof key);
    if (!admit(server, fd, peer_text, key, !tls))
        return;
    evutil_make_socket_nonblocking(fd);
    listen_set_nodelay(fd);
    struct bufferevent *bev = tls ? tls_accept_socket(server->base, fd, server->settings.tls)
                                  : bufferevent_socket_new(server->base, fd, BEV_OPT_CLOSE_ON_FREE);
    struct smtp_session *s = session_new(server, bev, peer_text);
    if (s == NULL) {
        if (bev)
            bufferevent_free(bev);
        else
            evutil_closesocket(fd);
        peer_count_release(server->settings.peers, key);
        peer_count_release(server->settings.unauthenticated, key);
        return;
    }
    snprintf(s->peer_key, sizeof s->peer_key, "%s", key);
    s->unauthenticated_counted = server->settings.unauthenticated != NULL;
    s->tls_active = tls;
    direct_replies_start(s);
    log_info(server->events[SEV_START], " session=%s role=%s peer=%s tls=%s", s->id,
             server->settings.role, s->peer, tls ? "implicit" : "none");
    start_reading(s);
    if (tls)
        deadline_start(&s->deadline, DEADLINE_HANDSHAKE, handshake_timeout(s), 0);
    send_greeting(s);
}

void smtp_server_accept(struct smtp_server *server, evutil_socket_t fd,
                        const struct sockaddr *peer, int peer_len)
{
    accept_connection(server, fd, peer, peer_len, false);
}

void smtp_server_accept_tls(struct smtp_server *server, evutil_socket_t fd,
                            const struct sockaddr *peer, int peer_len)
{
    accept_connection(server, fd, peer, peer_len, true);
}

struct smtp_session *smtp_server_adopt(struct smtp_server *server, struct bufferevent *bev,
                                       const char *peer, bool tls_active)
{
    struct smtp_session *s = session_new(server, bev, peer);
    if (s == NULL)
        return NULL;
    s->tls_active = tls_active;
    direct_replies_start(s);
    log_info(server->events[SEV_START], " session=%s role=%s peer=%s adopted=1", s->id,
             server->settings.role, s->peer);
    start_reading(s);
    reply_send(output(s), 220, NULL, "%s ESMTP odmr-client", server->settings.hostname);
    return s;
}

/* A session whose TLS handshake has not finished cannot be told anything: it ends in a
 * second (not after the closing flush's 30 s), freed from its timer so on_idle runs once. */
static bool end_before_handshake(struct smtp_session *s)
{
    if (deadline_kind(&s->deadline) != DEADLINE_HANDSHAKE || tls_handshake_done(s->bev))
        return false;
    enter_state(s, STATE_CLOSING);
    s->closed_by_server = true;
    bufferevent_disable(s->bev, EV_READ);
    deadline_start(&s->deadline, DEADLINE_CLOSE, 1, 0);
    return true;
}

void smtp_server_shutdown(struct smtp_server *server, void (*on_idle)(void *), void *arg)
{
    server->shutting_down = true;
    server->on_idle = on_idle;
    server->on_idle_arg = arg;
    struct smtp_session *next;
    for (struct smtp_session *s = server->sessions; s; s = next) {
        next = s->next;
        if (awaiting_hook(s) || s->state == STATE_CLOSING || end_before_handshake(s))
            continue;   /* the hook's answer, the flush or the timer closes it */
        if (s->state == STATE_DATA)
            log_info("message.aborted", " session=%s peer=%s reason=shutdown", s->id, s->peer);
        reply_send(output(s), 421, "4.3.2", "%s Service shutting down",
                   server->settings.hostname);
        close_after_flush(s);
    }
    if (server->session_count + server->detached_count == 0 && on_idle)
        on_idle(arg);
}

size_t smtp_server_session_count(const struct smtp_server *server)
{
    return server->session_count + server->detached_count;
}

void smtp_server_detached_end(struct smtp_server *server, const struct smtp_detached *d)
{
    log_info(server->events[SEV_END], " session=%s role=%s detached=1", d->id,
             server->settings.role);
    peer_count_release(server->settings.peers, d->peer_key);
    metrics_session_closed(server->settings.role);
    server->detached_count--;
    maybe_idle(server);
}

void smtp_server_free(struct smtp_server *server)
{
    while (server->sessions)
        session_free(server->sessions);
    free(server);
}

/* ---- for service verbs ---- */

struct evbuffer *smtp_session_output(struct smtp_session *s)
{
    return output(s);
}

void smtp_session_error(struct smtp_session *s, int code, const char *enhanced,
                        const char *text)
{
    reply_error(s, code, enhanced, text);
}

void smtp_session_close(struct smtp_session *s)
{
    if (s->state != STATE_CLOSING)
        close_after_flush(s);
}

bool smtp_session_tls_active(const struct smtp_session *s)
{
    return s->tls_active;
}

struct bufferevent *smtp_session_bev(struct smtp_session *s)
{
    return s->bev;
}

bool smtp_session_authenticated(const struct smtp_session *s)
{
    return s->authenticated;
}

bool smtp_session_esmtp(const struct smtp_session *s)
{
    return s->esmtp;
}

void smtp_session_set_authenticated(struct smtp_session *s)
{
    s->authenticated = true;
    leave_unauthenticated(s);
}

bool smtp_session_input_pending(const struct smtp_session *s)
{
    return evbuffer_get_length(bufferevent_get_input(s->bev)) > 0;
}

void smtp_session_take_lines(struct smtp_session *s, smtp_line_fn fn, void *ctx,
                             size_t max_len)
{
    s->line_taker = fn;
    s->line_taker_ctx = ctx;
    line_reader_set_limit(&s->reader, max_len);
}

void smtp_session_release_lines(struct smtp_session *s)
{
    s->line_taker = NULL;
    s->line_taker_ctx = NULL;
    line_reader_set_limit(&s->reader, COMMAND_LINE_MAX);
}

void smtp_session_pause(struct smtp_session *s)
{
    if (s->state == STATE_PAUSED || s->state == STATE_CLOSING)
        return;
    s->paused_from = s->state;
    enter_state(s, STATE_PAUSED);
    bufferevent_disable(s->bev, EV_READ);
    deadline_stop(&s->deadline);
}

bool smtp_session_paused(const struct smtp_session *s)
{
    return s->state == STATE_PAUSED;
}

/* Called from the event loop (a timer), never from inside a handler. */
void smtp_session_resume(struct smtp_session *s)
{
    if (s->state != STATE_PAUSED)
        return;
    enter_state(s, s->paused_from);
    resume_after_hook(s);
}

int smtp_session_detach(struct smtp_session *s, struct smtp_detached *out)
{
    if (s->state == STATE_CLOSING || s->state == STATE_DETACHED || s->data != NULL)
        return -1;
    direct_replies_stop(s, true);
    out->bev = s->bev;
    out->tls_active = s->tls_active;
    snprintf(out->id, sizeof out->id, "%s", s->id);
    snprintf(out->peer_key, sizeof out->peer_key, "%s", s->peer_key);
    bufferevent_setcb(s->bev, NULL, NULL, NULL, NULL);
    bufferevent_set_timeouts(s->bev, NULL, NULL);
    deadline_stop(&s->deadline);
    s->bev = NULL;
    s->server->session_count--;
    s->server->detached_count++;
    enter_state(s, STATE_DETACHED);   /* freed by process_input once the handler returns */
    return 0;
}

/* ---- accessors for hooks ---- */

const struct smtp_transaction *smtp_session_transaction(const struct smtp_session *s)
{
    return &s->txn;
}

bool smtp_session_data_follows(const struct smtp_session *s)
{
    char head[5];
    if (s->reader.skipping ||
        evbuffer_copyout(bufferevent_get_input(s->bev), head, sizeof head) != sizeof head)
        return false;
    return strncasecmp(head, "DATA\r", 5) == 0 || strncasecmp(head, "BDAT ", 5) == 0;
}

const char *smtp_session_id(const struct smtp_session *s)
{
    return s->id;
}

const char *smtp_session_peer(const struct smtp_session *s)
{
    return s->peer;
}

const char *smtp_session_helo(const struct smtp_session *s)
{
    return s->helo;
}

/* RFC 3848 protocol names for the Received header's "with" clause. */
const char *smtp_session_protocol(const struct smtp_session *s)
{
    if (is_lmtp(s))
        return "LMTP";
    if (!s->esmtp)
        return "SMTP";
    return s->tls_active ? "ESMTPS" : "ESMTP";
}

void *smtp_session_user(const struct smtp_session *s)
{
    return s->user;
}

void smtp_session_set_user(struct smtp_session *s, void *user)
{
    s->user = user;
}

bool smtp_session_closed_by_server(const struct smtp_session *s)
{
    return s->closed_by_server;
}

bool smtp_session_left_mid_transaction(const struct smtp_session *s)
{
    return s->ended_in_txn && !s->quit_received;
}
