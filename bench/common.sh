# Helpers every benchmark script sources. The caller defines `log` and
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

# Stops the given processes: TERM, then KILL whatever is left after 5 s.
stop_pids() {
    local pids=("$@") p i
    [ ${#pids[@]} -eq 0 ] && return 0
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for i in $(seq 50); do
        local alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive -eq 0 ] && break
        sleep 0.1
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
