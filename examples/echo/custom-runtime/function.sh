# Echo handler for the bash custom runtime (sourced by ./bootstrap, _HANDLER=function.handler).
#
#   handler EVENT   prints EVENT back (the result);
#                   sleeps N seconds first when EVENT has "sleep": N (to test timeouts);
#                   fails (exit status 1, message on stderr) when EVENT contains "fail".

handler() {
    local event=$1
    if [[ $event =~ \"sleep\"[[:space:]]*:[[:space:]]*([0-9]+(\.[0-9]+)?) ]]; then
        sleep "${BASH_REMATCH[1]}"
    fi
    if [[ $event == *'"fail"'* ]]; then
        printf 'handler failed: the event contains "fail"\nevent: %s\n' "$event" >&2
        return 1
    fi
    printf '%s\n' "$event"
}
