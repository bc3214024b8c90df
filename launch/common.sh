# Shared by the launch/*.sh scripts (sourced, not run).

# shell-quote like Python's shlex.quote: plain words as is, others in single quotes
shq() {
  local out="" a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+="$a "
    else out+="'${a//\'/\'\"\'\"\'}' "; fi
  done
  printf '%s' "${out% }"
}
