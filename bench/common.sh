# Helpers both benchmark scripts source. The caller defines `log` and
# TIME_LIMIT before sourcing this file.

# Stops the calling script (SIGTERM, so its EXIT trap cleans up) once
# TIME_LIMIT seconds have passed: a benchmark always ends by itself.
watchdog() {
    sleep "$TIME_LIMIT" &
    local s=$!
    trap 'kill $s 2>/dev/null; exit 0' TERM
    wait $s
    log "time limit of ${TIME_LIMIT}s reached, stopping"
    kill -TERM $$
}

# True when nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
