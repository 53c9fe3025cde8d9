/* SPDX-License-Identifier: ISC */
/* systemd's service notification protocol (sd_notify(3)) in a few lines, without libsystemd:
 * one datagram per state change to the AF_UNIX socket named by $NOTIFY_SOCKET, a path or an
 * abstract name (written with a leading '@'). Without $NOTIFY_SOCKET nothing is sent. odmrd
 * sends READY=1 when it serves, RELOADING=1 (with MONOTONIC_USEC) and READY=1 around a
 * SIGHUP reload, and STOPPING=1 when it begins to stop (odmrd.service, Type=notify). */
#ifndef ODMR_PLATFORM_SD_NOTIFY_H
#define ODMR_PLATFORM_SD_NOTIFY_H

/* Sends `state` ("READY=1", ...). 0 when sent or when there is no $NOTIFY_SOCKET, -1 with
 * errno set when the address is malformed or the send fails. */
int service_notify(const char *state);
/* "RELOADING=1" with the MONOTONIC_USEC systemd wants with it. */
int service_notify_reloading(void);

#endif
