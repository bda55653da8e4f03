#!/bin/sh
# An executable script run directly (no interpreter entry): its #! line decides.
printf 'Content-Type: text/plain\r\n\r\nshell PATH_INFO=%s\n' "$PATH_INFO"
