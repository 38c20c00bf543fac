"""Text values that tell whether a path writes every character as sent (array literals, COPY)."""

TRICKY_NAMES = ['Ada "The" \\ Count\n\u00e9', '"', "\\", '\\"', '""', "{", "}", "{}", ",", "a,b", "null", "NULL", "Null", " ", " padded ",
                "\t", "\r\n", "\x01\x1f\x7f", "\u2028\u2029", "\ufeff", "\U0001f600", "\u00e9" * 100, "\U0001f600" * 100, "'", "$1",
                "ARRAY[1]", "a}b{c", '\\n', "\\\\", "x\\", "\u0663\u0661", "\u00a0"]
TRICKY_EMAILS = ["o'brien+tag{x}|y@Example.COM", "a*b/c=d?e^f_g`h~i#j$k%l&m!n@example.org", "{}@b.io", "}@b.io", "ADA@EXAMPLE.COM",
                 "a.b.c@x-y.z9.de", "~@a.bc"]
