#!/bin/sh
# Render mvpn-client(1) from mvpn-client.1.in and the --help output of the
# binary being packaged: every command and subcommand gets a subsection with
# its help text, so the man page documents exactly what that binary accepts.
# Usage: gen-man.sh BINARY TEMPLATE VERSION DATE > mvpn-client.1
set -eu
bin=$1 template=$2 version=$3 date=$4

# Commands listed in a --help text: "  mvpn-client server network create <id> ..."
# -> "server network create" (the words before the first argument or option).
list_commands() {
	sed -n '/^Commands:/,/^$/s/^  mvpn-client \(.*\)$/\1/p' |
		sed 's/  .*//' |
		awk -v prefix="$1" '{
			cmd = ""
			for (i = 1; i <= NF; i++) { if ($i ~ /^[<[]/) break; cmd = (cmd == "" ? $i : cmd " " $i) }
			if (cmd != "" && cmd != prefix) print cmd
		}'
}

# Escape help text for roff: backslashes, and lines starting with . or '.
roff_text() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"; }

# Help output must not depend on the build machine's terminal or locale.
help_of() { env -i COLUMNS=80 "$bin" "$@" --help; }

commands_section() {
	queue=$(help_of | list_commands "")
	printf '.SS "mvpn-client"\n.nf\n'
	help_of | roff_text
	printf '.fi\n'
	while [ -n "$queue" ]; do
		cmd=$(printf '%s\n' "$queue" | head -n 1)
		queue=$(printf '%s\n' "$queue" | tail -n +2)
		# shellcheck disable=SC2086 # a command is several words on purpose
		text=$(help_of $cmd)
		printf '.SS "mvpn-client %s"\n.nf\n' "$cmd"
		printf '%s\n' "$text" | roff_text
		printf '.fi\n'
		sub=$(printf '%s\n' "$text" | list_commands "$cmd")
		if [ -n "$sub" ]; then queue=$(printf '%s\n%s\n' "$queue" "$sub" | sed '/^$/d'); fi
	done
}

section=$(mktemp)
trap 'rm -f "$section"' EXIT
commands_section > "$section"
sed -e "s/@VERSION@/$version/g" -e "s/@DATE@/$date/g" "$template" |
	awk -v f="$section" '$0 == "@COMMANDS@" { while ((getline l < f) > 0) print l; next } { print }'
