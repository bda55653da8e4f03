# A Perl CGI script: the classic, with a Status header of its own.
# Try http://scripts.localhost:8080/cgi-bin/hello.pl?anything
use strict;
use warnings;
print "Status: 200 OK\r\n";
print "Content-Type: text/plain; charset=utf-8\r\n\r\n";
print "Hello from Perl. Query: ", ($ENV{QUERY_STRING} // ""), "\n";
