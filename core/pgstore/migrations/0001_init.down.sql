DROP TABLE events;
DROP TABLE conversations;
