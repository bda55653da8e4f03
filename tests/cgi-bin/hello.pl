# A Perl CGI script: a Status header with its own reason phrase, and the query.
use strict;
use warnings;
my $query = $ENV{QUERY_STRING} // "";
print "Status: 201 Created By Perl\r\n";
print "Content-Type: text/plain\r\n";
print "X-Script: perl\r\n\r\n";
print "perl says hi, query=$query\n";
