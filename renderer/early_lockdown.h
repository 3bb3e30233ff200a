// Declarations shared by early.go and early_lockdown.c.
#ifndef SANDKIT_EARLY_LOCKDOWN_H
#define SANDKIT_EARLY_LOCKDOWN_H

#define SANDKIT_WHAT_LEN 512

void sandkit_early_lockdown(const char *arg);

extern int sandkit_lockdown_ran;  // 1 once sandkit_early_lockdown ran
extern int sandkit_spec_errno;    // the spec in argv[1] is missing or malformed
extern int sandkit_proc_errno;    // opening /proc/self/status or /proc/self/fd
extern int sandkit_proc_status_fd;
extern int sandkit_proc_fd_dir;
extern int sandkit_threads;       // threads when the lockdown began
extern int sandkit_root_errno;    // the empty root; what failed in sandkit_root_what
extern char sandkit_root_what[SANDKIT_WHAT_LEN];
extern int sandkit_hostname_errno;
extern int sandkit_caps_errno;
extern int sandkit_landlock_errno;
extern char sandkit_landlock_what[SANDKIT_WHAT_LEN];

#endif
