"""`synthkd efficacy`: which method gives the better student per teacher dollar, with paired statistics."""
